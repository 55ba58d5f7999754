//! The SQL this check sends, with identifiers quoted and the operator's extra condition
//! confined to one expression.

/// Quotes an SQL identifier: `a"b` becomes `"a""b"`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal (with standard_conforming_strings on): `O'Brien`
/// becomes `'O''Brien'`.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The queries of one check.
#[derive(Debug)]
pub struct DanglingQuery {
    table: String,
    qualified: String,
    deleted: String,
    expires: String,
    id: String,
    condition: Option<String>,
}

impl DanglingQuery {
    /// Validates the names and the condition; errors name the config field.
    pub fn new(
        schema: Option<&str>,
        table: &str,
        deleted: &str,
        expires: &str,
        id: &str,
        condition: Option<&str>,
    ) -> Result<DanglingQuery, String> {
        let names = [
            ("table", Some(table)),
            ("schema", schema),
            ("deleted_column", Some(deleted)),
            ("expires_column", Some(expires)),
            ("id_column", Some(id)),
        ];
        for (field, name) in names.into_iter().filter_map(|(field, name)| Some((field, name?))) {
            if name.is_empty() || name.contains('\0') {
                return Err(runbox_plugin_sdk::config::field_error(
                    field,
                    "must be a non-empty name",
                ));
            }
        }
        let condition = match condition.map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(check_condition(text)?),
        };
        let qualified = match schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(table)),
            None => quote_ident(table),
        };
        Ok(DanglingQuery {
            table: match schema {
                Some(schema) => format!("{schema}.{table}"),
                None => table.to_string(),
            },
            qualified,
            deleted: deleted.to_string(),
            expires: expires.to_string(),
            id: id.to_string(),
            condition,
        })
    }

    /// The table as the operator named it.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// The deleted-at column.
    pub fn deleted(&self) -> &str {
        &self.deleted
    }

    /// The expires-at column.
    pub fn expires(&self) -> &str {
        &self.expires
    }

    /// The id column.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Lists the table's columns (no rows: the table does not exist or is not visible).
    pub fn columns_sql(&self) -> String {
        format!(
            "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass({}) AND attnum > 0 AND NOT attisdropped",
            quote_literal(&self.qualified)
        )
    }

    fn filter(&self) -> String {
        let mut filter = format!(
            "{} IS NULL AND {} < now()",
            quote_ident(&self.deleted),
            quote_ident(&self.expires)
        );
        if let Some(condition) = &self.condition {
            filter.push_str(&format!(" AND ({condition})"));
        }
        filter
    }

    /// Count of dangling rows and seconds since the oldest one expired.
    pub fn count_sql(&self) -> String {
        format!(
            "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min({expires})), 0)::float8 FROM {table} WHERE {filter}",
            expires = quote_ident(&self.expires),
            table = self.qualified,
            filter = self.filter()
        )
    }

    /// The ids of the `limit` oldest dangling rows.
    pub fn samples_sql(&self, limit: u32) -> String {
        format!(
            "SELECT {id}::text FROM {table} WHERE {filter} ORDER BY {expires} LIMIT {limit}",
            id = quote_ident(&self.id),
            table = self.qualified,
            filter = self.filter(),
            expires = quote_ident(&self.expires)
        )
    }
}

/// The extra condition must be one expression: no statement separator, no comment that
/// could swallow the closing parenthesis, balanced parentheses outside string literals.
/// The READ ONLY transaction is the second line of defence.
fn check_condition(text: &str) -> Result<String, String> {
    let refuse = |why: &str| {
        Err(runbox_plugin_sdk::config::field_error(
            "where",
            format!("refused: {why}"),
        ))
    };
    if text.contains(';') {
        return refuse("`;` would start another statement; give one boolean expression");
    }
    if text.contains("--") || text.contains("/*") {
        return refuse("comments are not allowed");
    }
    let mut depth = 0i32;
    let mut in_string = false;
    for c in text.chars() {
        match c {
            '\'' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string => {
                depth -= 1;
                if depth < 0 {
                    return refuse("unbalanced `)`");
                }
            }
            _ => {}
        }
    }
    if in_string || depth != 0 {
        return refuse("unbalanced quotes or parentheses");
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_literal("O'Brien"), "'O''Brien'");
        let query = DanglingQuery::new(
            Some("app"),
            "rec\"s",
            "deleted_at",
            "expires_at",
            "id",
            Some("tenant = 'a(b'"),
        )
        .unwrap();
        assert_eq!(
            query.count_sql(),
            r#"SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min("expires_at")), 0)::float8 FROM "app"."rec""s" WHERE "deleted_at" IS NULL AND "expires_at" < now() AND (tenant = 'a(b')"#
        );
        assert!(
            query.columns_sql().contains(r#"to_regclass('"app"."rec""s"')"#),
            "{}",
            query.columns_sql()
        );
    }

    #[test]
    fn conditions_that_could_escape_are_refused() {
        for bad in [
            "true; delete from recordings",
            "true) or (true",
            "x -- ",
            "x /* */",
            "a = 'unterminated",
            "(a",
        ] {
            let err = DanglingQuery::new(None, "t", "d", "e", "id", Some(bad)).unwrap_err();
            assert!(err.starts_with("config field `where`: refused"), "{bad}: {err}");
        }
        assert!(
            DanglingQuery::new(
                None,
                "t",
                "d",
                "e",
                "id",
                Some("tenant_id = 42 AND (kind = 'a' OR kind = 'b')")
            )
            .is_ok()
        );
    }
}
