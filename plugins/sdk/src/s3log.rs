//! S3 server access log lines (the documented space-separated format): quoted fields
//! (`"GET /b/k HTTP/1.1"`, with `\"` escapes), the bracketed time
//! (`[06/Feb/2019:00:00:38 +0000]`), `-` for empty, and any fields AWS appends later.

/// The fields a rate check needs from one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Request time, Unix seconds.
    pub time: i64,
    /// Operation, e.g. `REST.GET.OBJECT`.
    pub operation: String,
    /// HTTP status (`None` when logged as `-`).
    pub status: Option<u16>,
    /// S3 error code, e.g. `NoSuchKey`.
    pub error_code: Option<String>,
}

/// Splits a line into fields; `None` stands for `-`.
pub fn fields(line: &str) -> Result<Vec<Option<String>>, String> {
    let chars: Vec<char> = line.trim_end_matches(['\r', '\n']).chars().collect();
    let mut fields = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            ' ' => i += 1,
            '"' => {
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated quoted field".into()),
                        Some('\\') if chars.get(i + 1).is_some() => {
                            value.push(chars[i + 1]);
                            i += 2;
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some(&c) => {
                            value.push(c);
                            i += 1;
                        }
                    }
                }
                fields.push((value != "-").then_some(value));
            }
            '[' => {
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == ']')
                    .ok_or("unterminated [time] field")?;
                fields.push(Some(chars[i + 1..i + end].iter().collect()));
                i += end + 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && chars[i] != ' ' {
                    i += 1;
                }
                let value: String = chars[start..i].iter().collect();
                fields.push((value != "-").then_some(value));
            }
        }
    }
    Ok(fields)
}

/// Parses one access-log line.
pub fn parse(line: &str) -> Result<Record, String> {
    let fields = fields(line)?;
    if fields.len() < 11 {
        return Err(format!("{} fields, expected at least 11", fields.len()));
    }
    let time = fields[2]
        .as_deref()
        .and_then(crate::time::parse_clf)
        .ok_or("bad time field")?;
    let operation = fields[6].clone().ok_or("no operation")?;
    let status = match fields[9].as_deref() {
        None => None,
        Some(text) => Some(
            text.parse::<u16>()
                .ok()
                .filter(|s| (100..600).contains(s))
                .ok_or_else(|| format!("bad status {text:?}"))?,
        ),
    };
    Ok(Record {
        time,
        operation,
        status,
        error_code: fields[10].clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be awsexamplebucket1 [06/Feb/2019:00:00:38 +0000] 192.0.2.3 79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be 3E57427F3EXAMPLE REST.GET.VERSIONING - "GET /awsexamplebucket1?versioning HTTP/1.1" 200 - 113 - 7 - "-" "S3Console/0.4" - s9lzHYrFp76ZVxRcpX9+5cjAnEH2ROuNkd2BHfIa6UkFVdtjf5mKR3/eTPFvsiP/XV/VLi31234= SigV2 ECDHE-RSA-AES128-GCM-SHA256 AuthHeader awsexamplebucket1.s3.us-west-1.amazonaws.com TLSV1.2 arn:aws:s3:us-west-1:123456789012:accesspoint/example-AP Yes"#;

    #[test]
    fn parses_the_documented_example() {
        let record = parse(LINE).unwrap();
        assert_eq!(
            record,
            Record {
                time: 1_549_411_238,
                operation: "REST.GET.VERSIONING".into(),
                status: Some(200),
                error_code: None
            }
        );
        assert_eq!(fields(LINE).unwrap().len(), 26);
    }

    #[test]
    fn tolerates_escapes_and_appended_fields_and_rejects_garbage() {
        let line = r#"o b [06/Feb/2019:00:00:38 +0000] ip req id REST.PUT.OBJECT k "PUT /b/k \"q\" HTTP/1.1" 403 AccessDenied 0 - 1 - "-" "ua \"x\"" - h SigV4 c A host TLSv1.3 - - future-field another"#;
        let record = parse(line).unwrap();
        assert_eq!(
            (record.status, record.error_code.as_deref()),
            (Some(403), Some("AccessDenied"))
        );
        for bad in [
            "",
            "a b c",
            r#"o b [06/Feb/2019:00:00:38 +0000] ip r i OP k "unterminated"#,
            "o b [bad time] ip r i OP k \"x\" 200 - 1",
            "o b [06/Feb/2019:00:00:38 +0000] ip r i OP k \"x\" 999 - 1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
