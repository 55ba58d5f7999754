//! `aws-rds-failover` (mitigation): fails an Aurora/RDS Multi-AZ DB cluster over to a
//! reader (`aws rds failover-db-cluster`). The plan reads the cluster
//! (DescribeDBClusters) and names the current writer and the readers; it changes
//! nothing. Apply calls FailoverDBCluster (with `target_instance` as
//! TargetDBInstanceIdentifier when set), reads the cluster again and reports the new
//! writer; it fails when the writer did not change.

use runbox_plugin_sdk::aws::{self, AwsError, Service};
use runbox_plugin_sdk::mitigation::Guest;
use runbox_plugin_sdk::{Info, Outcome, Plan, Status, config, xml};
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "aws-rds-failover config",
  "type": "object",
  "properties": {
    "endpoint": {"type": "string", "description": "RDS endpoint, e.g. https://rds.eu-west-1.amazonaws.com (also the step's grant)"},
    "region": {"type": "string", "default": "us-east-1", "description": "The endpoint's region (SigV4 signs for it)"},
    "cluster": {"type": "string", "description": "DB cluster identifier (--db-cluster-identifier), e.g. author-prod"},
    "target_instance": {"type": "string", "description": "Reader instance to promote (TargetDBInstanceIdentifier); default: RDS picks one"},
    "access_key_secret": {"type": "string", "default": "aws_access_key_id"},
    "secret_key_secret": {"type": "string", "default": "aws_secret_access_key"},
    "session_token_secret": {"type": "string", "description": "Granted secret holding a session token (temporary credentials)"}
  },
  "required": ["endpoint", "cluster"],
  "additionalProperties": false
}"#;

const API_VERSION: &str = "2014-10-31";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    endpoint: String,
    #[serde(default = "aws::defaults::region")]
    region: String,
    cluster: String,
    target_instance: Option<String>,
    #[serde(default = "aws::defaults::access_key_secret")]
    access_key_secret: String,
    #[serde(default = "aws::defaults::secret_key_secret")]
    secret_key_secret: String,
    session_token_secret: Option<String>,
}

/// The cluster's members as DescribeDBClusters tells them.
#[derive(Debug)]
struct Members {
    status: String,
    writer: Option<String>,
    readers: Vec<String>,
}

struct RdsFailover;

impl Guest for RdsFailover {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "aws-rds-failover",
            "Fails a DB cluster over to a reader (FailoverDBCluster) and reports the new writer",
            SCHEMA
        )
    }

    fn plan(config: String) -> Result<Plan, String> {
        let (config, rds) = prepare(&config)?;
        let members = describe(&rds, &config.cluster)?;
        let writer = ready_writer(&config, &members)?;
        let target = match &config.target_instance {
            Some(target) => format!("reader {target}"),
            None => format!("a reader RDS picks (of {})", members.readers.join(", ")),
        };
        Ok(Plan {
            summary: format!(
                "fail over DB cluster {} ({}): writer {writer} → {target}",
                config.cluster, members.status
            ),
            changes: vec![
                format!(
                    "FailoverDBCluster {}: {writer} becomes a reader, {target} becomes the writer",
                    config.cluster
                ),
                format!("current writer: {writer}; readers: {}", members.readers.join(", ")),
            ],
            destructive: false,
        })
    }

    fn apply(config: String, _plan: Plan) -> Result<Outcome, String> {
        let (config, rds) = prepare(&config)?;
        // Read again: the writer now, not the plan's.
        let before = describe(&rds, &config.cluster)?;
        let old = ready_writer(&config, &before)?;
        let mut params = vec![("DBClusterIdentifier", config.cluster.as_str())];
        if let Some(target) = &config.target_instance {
            params.push(("TargetDBInstanceIdentifier", target.as_str()));
        }
        rds.query("FailoverDBCluster", API_VERSION, &params)
            .map_err(|err| format!("FailoverDBCluster {}: {}", config.cluster, explain(&err)))?;
        let after = describe(&rds, &config.cluster)?;
        let new = after
            .writer
            .clone()
            .ok_or_else(|| format!("after FailoverDBCluster, cluster {} reports no writer", config.cluster))?;
        if new == old {
            return Err(format!(
                "FailoverDBCluster {} was accepted but the writer is still {old} (status {}): check the cluster in the RDS console before retrying",
                config.cluster, after.status
            ));
        }
        if let Some(target) = &config.target_instance
            && *target != new
        {
            return Err(format!(
                "FailoverDBCluster {} made {new} the writer, not target_instance {target}",
                config.cluster
            ));
        }
        Ok(Outcome::new(
            Status::Ok,
            format!("DB cluster {} failed over: writer {old} → {new}", config.cluster),
            vec![format!(
                "writer {old} → {new} (readers now: {})",
                after.readers.join(", ")
            )],
        )
        .output("old_writer", &old)
        .output("new_writer", &new))
    }
}

fn prepare(json: &str) -> Result<(Config, Service), String> {
    let config: Config = config::parse(json)?;
    if config.cluster.trim().is_empty() {
        return Err(config::field_error(
            "cluster",
            "is empty: give the DB cluster identifier, e.g. author-prod",
        ));
    }
    let credentials = aws::credentials_from_secrets(
        &config.access_key_secret,
        &config.secret_key_secret,
        config.session_token_secret.as_deref(),
    )?;
    let rds = Service::new(&config.endpoint, "rds", &config.region, credentials)
        .map_err(|err| config::field_error("endpoint", err))?;
    Ok((config, rds))
}

/// The writer, when a failover can proceed: the cluster has a writer and at least
/// one reader, and `target_instance` (if set) is one of the readers.
fn ready_writer(config: &Config, members: &Members) -> Result<String, String> {
    let writer = members.writer.clone().ok_or_else(|| {
        format!(
            "DB cluster {} has no writer instance: nothing to fail over from",
            config.cluster
        )
    })?;
    if members.readers.is_empty() {
        return Err(format!(
            "DB cluster {} has a single instance ({writer}): a failover needs at least one reader; add a reader instance first",
            config.cluster
        ));
    }
    if let Some(target) = &config.target_instance
        && !members.readers.contains(target)
    {
        return Err(config::field_error(
            "target_instance",
            format!(
                "{target} is not a reader of cluster {} (writer {writer}, readers {})",
                config.cluster,
                members.readers.join(", ")
            ),
        ));
    }
    Ok(writer)
}

fn describe(rds: &Service, cluster: &str) -> Result<Members, String> {
    let answer = rds
        .query("DescribeDBClusters", API_VERSION, &[("DBClusterIdentifier", cluster)])
        .map_err(|err| format!("DescribeDBClusters {cluster}: {}", explain(&err)))?;
    parse_members(&answer, cluster)
}

fn parse_members(answer: &str, cluster: &str) -> Result<Members, String> {
    let unreadable = || format!("DescribeDBClusters {cluster}: unreadable answer");
    let clusters = xml::at(
        answer,
        &["DescribeDBClustersResponse", "DescribeDBClustersResult", "DBClusters"],
    )
    .ok_or_else(unreadable)?;
    let found = xml::children(clusters, "DBCluster").ok_or_else(unreadable)?;
    let block = found
        .iter()
        .find(|block| xml::child(block, "DBClusterIdentifier").as_deref() == Some(cluster))
        .ok_or_else(|| format!("DB cluster {cluster} not found"))?;
    let mut members = Members {
        status: xml::child(block, "Status").unwrap_or_else(|| "status unknown".into()),
        writer: None,
        readers: Vec::new(),
    };
    let list = xml::at(block, &["DBClusterMembers"]).unwrap_or("");
    for member in xml::children(list, "DBClusterMember").ok_or_else(unreadable)? {
        let id = xml::child(member, "DBInstanceIdentifier").ok_or_else(unreadable)?;
        if xml::child(member, "IsClusterWriter").as_deref() == Some("true") {
            members.writer = Some(id);
        } else {
            members.readers.push(id);
        }
    }
    Ok(members)
}

/// An AWS error with what to do about the common ones.
fn explain(err: &AwsError) -> String {
    match err.code() {
        Some("DBClusterNotFoundFault") => format!("{err} (check `cluster` and `region`)"),
        Some("InvalidDBClusterStateFault") => {
            format!("{err} (the cluster must be available with at least two instances)")
        }
        Some("SignatureDoesNotMatch" | "InvalidClientTokenId" | "UnrecognizedClientException") => {
            format!("{err} (check the granted credentials and `region`)")
        }
        _ => err.to_string(),
    }
}

runbox_plugin_sdk::export_mitigation!(RdsFailover);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writer_and_readers() {
        let xml = "<DescribeDBClustersResponse><DescribeDBClustersResult><DBClusters><DBCluster><DBClusterIdentifier>author-prod</DBClusterIdentifier><Status>available</Status><DBClusterMembers><DBClusterMember><DBInstanceIdentifier>p-2</DBInstanceIdentifier><IsClusterWriter>false</IsClusterWriter></DBClusterMember><DBClusterMember><DBInstanceIdentifier>p-1</DBInstanceIdentifier><IsClusterWriter>true</IsClusterWriter></DBClusterMember></DBClusterMembers></DBCluster></DBClusters></DescribeDBClustersResult></DescribeDBClustersResponse>";
        let members = parse_members(xml, "author-prod").unwrap();
        assert_eq!(members.writer.as_deref(), Some("p-1"));
        assert_eq!(members.readers, ["p-2"]);
        assert_eq!(members.status, "available");
        assert!(parse_members(xml, "other").unwrap_err().contains("not found"));
        assert!(parse_members("<x/>", "author-prod").is_err());
    }
}
