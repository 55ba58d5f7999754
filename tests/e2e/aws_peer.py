"""The AWS tests' independent peer: boto3/botocore (pinned in scripts/ensure-deps) seed
moto's server and read results back, so nothing the tests assert comes from runbox's
own client. One command per call; each prints one JSON line.

    aws_peer.py ENDPOINT COMMAND [ARGS...]

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (the test's IAM user
once `enable-auth` has run).
"""

import json
import sys
import urllib.request

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REGION = "us-east-1"


def client(endpoint, service):
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION)


def moto_api(endpoint, path, body):
    request = urllib.request.Request(
        endpoint + path, data=body.encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def enable_auth(endpoint):
    """An IAM user allowed everything, with an access key; then moto checks every
    request's SigV4 signature (with botocore's signer) and denies unknown keys."""
    iam = client(endpoint, "iam")
    iam.create_user(UserName="runbox-test")
    iam.put_user_policy(
        UserName="runbox-test",
        PolicyName="all",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    )
    key = iam.create_access_key(UserName="runbox-test")["AccessKey"]
    moto_api(endpoint, "/moto-api/reset-auth", "0")
    return {"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}


def rds_cluster(endpoint, cluster, count):
    rds = client(endpoint, "rds")
    rds.create_db_cluster(
        DBClusterIdentifier=cluster,
        Engine="aurora-postgresql",
        MasterUsername="admin",
        MasterUserPassword="runbox-test-password",
    )
    for n in range(1, int(count) + 1):
        rds.create_db_instance(
            DBInstanceIdentifier=f"{cluster}-{n}",
            DBClusterIdentifier=cluster,
            Engine="aurora-postgresql",
            DBInstanceClass="db.r6g.large",
        )
    return rds_members(endpoint, cluster)


def rds_members(endpoint, cluster):
    members = client(endpoint, "rds").describe_db_clusters(DBClusterIdentifier=cluster)["DBClusters"][0][
        "DBClusterMembers"
    ]
    return {
        "writer": [m["DBInstanceIdentifier"] for m in members if m["IsClusterWriter"]],
        "readers": [m["DBInstanceIdentifier"] for m in members if not m["IsClusterWriter"]],
    }


def ssm_put(endpoint, name, value, kind):
    return {"version": client(endpoint, "ssm").put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)["Version"]}


def ssm_get(endpoint, name):
    try:
        parameter = client(endpoint, "ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]
    except client(endpoint, "ssm").exceptions.ParameterNotFound:
        return {"missing": True}
    return {"value": parameter["Value"], "version": parameter["Version"], "type": parameter["Type"]}


def s3_put(endpoint, bucket, key, storage_class):
    s3 = client(endpoint, "s3")
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    s3.put_object(Bucket=bucket, Key=key, Body=b"recording bytes", StorageClass=storage_class)
    return s3_head(endpoint, bucket, key)


def s3_head(endpoint, bucket, key):
    head = client(endpoint, "s3").head_object(Bucket=bucket, Key=key)
    return {"storage_class": head.get("StorageClass", "STANDARD"), "restore": head.get("Restore")}


def restore_progress(endpoint, mode, seconds="2"):
    """How moto moves a restore on (its state manager, model s3::keyrestore: no state,
    IN_PROGRESS, RESTORED; it advances only when a HEAD/GET reads the object's restore
    state). moto finishes a restore at once by default, and reports "no state" as
    restored, so a test that wants to see a restore in progress:
      `arm [SECONDS]`: the first read of a restore state more than SECONDS after the
          object was written (or last moved on) moves it to IN_PROGRESS, the next read
          SECONDS after that to RESTORED (time progression);
      `hold`: no more moves (manual progression that is never advanced far enough);
      `finish`: every restore completes at once (moto's default)."""
    transitions = {
        "arm": {"progression": "time", "seconds": int(seconds)},
        "hold": {"progression": "manual", "times": 1000000},
        "finish": {"progression": "immediate"},
    }
    return moto_api(
        endpoint,
        "/moto-api/state-manager/set-transition",
        json.dumps({"model_name": "s3::keyrestore", "transition": transitions[mode]}),
    )


def sign(_endpoint, vectors_path):
    """botocore's SigV4 Authorization header for each request of a vectors file (the
    SDK's plugins/sdk/src/sigv4_vectors.json): a list of {service, region, access_key,
    secret_key, session_token?, method, url, headers, body, amz_date}."""
    with open(vectors_path) as file:
        vectors = json.load(file)
    out = []
    for spec in vectors:
        headers = dict(spec["headers"])
        headers["X-Amz-Date"] = spec["amz_date"]
        if spec.get("session_token"):
            headers["X-Amz-Security-Token"] = spec["session_token"]
        request = AWSRequest(method=spec["method"], url=spec["url"], data=spec["body"].encode(), headers=headers)
        request.context["timestamp"] = spec["amz_date"]
        credentials = Credentials(spec["access_key"], spec["secret_key"], spec.get("session_token"))
        auth = SigV4Auth(credentials, spec["service"], spec["region"])
        canonical = auth.canonical_request(request)
        signature = auth.signature(auth.string_to_sign(request, canonical), request)
        signed = auth.signed_headers(auth.headers_to_sign(request))
        scope = auth.credential_scope(request)
        out.append(
            f"AWS4-HMAC-SHA256 Credential={spec['access_key']}/{scope}, SignedHeaders={signed}, Signature={signature}"
        )
    return out


COMMANDS = {
    "enable-auth": enable_auth,
    "rds-cluster": rds_cluster,
    "rds-members": rds_members,
    "ssm-put": ssm_put,
    "ssm-get": ssm_get,
    "s3-put": s3_put,
    "s3-head": s3_head,
    "restore-progress": restore_progress,
    "sign": sign,
}

if __name__ == "__main__":
    endpoint, command, *args = sys.argv[1:]
    print(json.dumps(COMMANDS[command](endpoint, *args)))
