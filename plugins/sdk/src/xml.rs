//! Just enough XML for AWS answers (S3's REST XML, the Query protocol of RDS, STS, …):
//! elements by name, unescaped text. No DTDs, no namespaces beyond ignoring a tag's
//! attributes; CDATA is not used by these services.

/// The text of the first `<name>…</name>` anywhere in `xml`, unescaped.
pub fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(unescape(&xml[start..end]))
}

/// Every `<name>…</name>` block's inner text anywhere in `xml` (not unescaped).
pub fn blocks<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

/// The inner text (not unescaped) of every element named `name` that is a direct
/// child of `xml`'s top level: elements of the same name nested deeper (a
/// `<Status>` inside a `<VpcSecurityGroupMembership>`) are not returned. A
/// self-closing `<name/>` is an empty child. `None` when the XML is not well nested.
pub fn children<'a>(xml: &'a str, name: &str) -> Option<Vec<&'a str>> {
    let mut out = Vec::new();
    // The names of the open elements, outermost first.
    let mut open_names: Vec<&str> = Vec::new();
    // Where the inner text of a matching child began, while inside it.
    let mut inside: Option<usize> = None;
    let mut at = 0;
    while let Some(open) = xml[at..].find('<') {
        let open = at + open;
        let close = open + xml[open..].find('>')?;
        let tag = &xml[open + 1..close];
        at = close + 1;
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(closing) = tag.strip_prefix('/') {
            if open_names.pop()? != closing.trim() {
                return None;
            }
            if open_names.is_empty()
                && let Some(start) = inside.take()
            {
                out.push(&xml[start..open]);
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag_name = tag
            .trim_end_matches('/')
            .split(|c: char| c.is_whitespace())
            .next()
            .unwrap_or("");
        if open_names.is_empty() && tag_name == name {
            if self_closing {
                out.push("");
                continue;
            }
            inside = Some(at);
        }
        if !self_closing {
            open_names.push(tag_name);
        }
    }
    open_names.is_empty().then_some(out)
}

/// The first direct child `name` of `xml`'s top level (see [`children`]), its text
/// unescaped.
pub fn child(xml: &str, name: &str) -> Option<String> {
    children(xml, name)?.first().map(|text| unescape(text))
}

/// The inner text of the element at `path` from `xml`'s top level, one direct child
/// per name (`["DescribeDBClustersResult", "DBClusters"]`), not unescaped.
pub fn at<'a>(xml: &'a str, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(xml, |inner, name| children(inner, name)?.first().copied())
}

/// Replaces the five predefined entities and numeric character references.
pub fn unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let Some(semi) = after.find(';').filter(|&semi| semi <= 10) else {
            out.push('&');
            rest = after;
            continue;
        };
        let entity = &after[..semi];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "amp" => Some('&'),
            _ => entity
                .strip_prefix("#x")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes text for an element's content or an attribute.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTERS: &str = r#"<?xml version="1.0"?><DescribeDBClustersResponse xmlns="http://rds.amazonaws.com/doc/2014-10-31/"><DescribeDBClustersResult><DBClusters><DBCluster><VpcSecurityGroups><VpcSecurityGroupMembership><VpcSecurityGroupId>sg-1</VpcSecurityGroupId><Status>active</Status></VpcSecurityGroupMembership></VpcSecurityGroups><DBClusterIdentifier>author-prod</DBClusterIdentifier><Status>available</Status><ReadReplicaIdentifiers/><DBClusterMembers><DBClusterMember><DBInstanceIdentifier>a&amp;1</DBInstanceIdentifier><IsClusterWriter>true</IsClusterWriter></DBClusterMember><DBClusterMember><DBInstanceIdentifier>b</DBInstanceIdentifier><IsClusterWriter>false</IsClusterWriter></DBClusterMember></DBClusterMembers></DBCluster></DBClusters></DescribeDBClustersResult></DescribeDBClustersResponse>"#;

    #[test]
    fn children_skip_deeper_elements_of_the_same_name() {
        let clusters = at(
            CLUSTERS,
            &["DescribeDBClustersResponse", "DescribeDBClustersResult", "DBClusters"],
        )
        .unwrap();
        let cluster = children(clusters, "DBCluster").unwrap();
        assert_eq!(cluster.len(), 1);
        // The security group's <Status> comes first but is not the cluster's.
        assert_eq!(child(cluster[0], "Status").as_deref(), Some("available"));
        assert_eq!(children(cluster[0], "ReadReplicaIdentifiers").unwrap(), [""]);
        let members = children(at(cluster[0], &["DBClusterMembers"]).unwrap(), "DBClusterMember").unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(child(members[0], "DBInstanceIdentifier").as_deref(), Some("a&1"));
        assert_eq!(child(members[1], "IsClusterWriter").as_deref(), Some("false"));
        assert_eq!(child(cluster[0], "Missing"), None);
    }

    #[test]
    fn badly_nested_xml_is_refused() {
        for bad in ["<a><b></a></b>", "<a>", "</a>", "<a><b>x</c></a>", "<a"] {
            assert_eq!(children(bad, "a"), None, "{bad}");
        }
        assert_eq!(children("<a x=\"1\">t</a><a/>", "a").unwrap(), ["t", ""]);
    }

    #[test]
    fn reads_s3_listings() {
        let xml = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a&amp;b</Key><Size>5</Size></Contents><Contents><Key>c</Key></Contents><NextContinuationToken>t1</NextContinuationToken></ListBucketResult>";
        let contents = blocks(xml, "Contents");
        assert_eq!(contents.len(), 2);
        assert_eq!(tag(contents[0], "Key").as_deref(), Some("a&b"));
        assert_eq!(tag(xml, "NextContinuationToken").as_deref(), Some("t1"));
    }

    #[test]
    fn escapes_and_unescapes() {
        assert_eq!(escape("a<b&'"), "a&lt;b&amp;&apos;");
        assert_eq!(unescape("a&lt;b&amp;c &#65;&#x42; &bogus; & x"), "a<b&c AB &bogus; & x");
        assert_eq!(unescape(&escape("<&\"'>")), "<&\"'>");
    }
}
