"""The audit trail's copy in the site's S3 Object Lock bucket (compliance mode, the site's CMK).

Every record appended to the local log (the source of truth, written first) is also PUT as one object
``PREFIX/<seq:012d>-<hash>.json`` whose body is exactly the record's line in the log (without the newline), with
``ObjectLockMode=COMPLIANCE``, a retain-until date (default 7 years, like the bucket's default retention),
``ServerSideEncryption=aws:kms`` (optionally a given key), ``Content-MD5`` and a SHA-256 checksum, and
``If-None-Match: *`` so an existing object is never replaced. Nobody, root included, can delete or overwrite such an
object before its retention ends, so the bucket is the head hash kept elsewhere that catches removal from the end of
the local log.

IAM for the writer, on ``arn:aws:s3:::BUCKET/PREFIX/*`` (and ``s3:ListBucket`` on the bucket with ``s3:prefix``):
s3:PutObject, s3:PutObjectRetention, s3:GetObject, s3:ListBucket; on the site's CMK: kms:GenerateDataKey (and
kms:Decrypt to read objects back in ``verify``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from finml.model_registry.audit import _canonical

BUCKET_ENV = "FINML_AUDIT_BUCKET"
REGION_ENV = "FINML_AUDIT_BUCKET_REGION"
KMS_ENV = "FINML_AUDIT_KMS_KEY_ID"
DEFAULT_RETENTION_DAYS = 2555  # seven years: the bucket's default retention (workloads/model_registry.py)


class AuditBucketError(RuntimeError):
    """The bucket could not be written or read (an environment problem, exit 3)."""


def parse_bucket_uri(uri: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` -> (bucket, prefix without surrounding slashes); ValueError naming what is allowed."""
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise ValueError(f"audit bucket {uri!r}: expected s3://BUCKET or s3://BUCKET/PREFIX")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix.strip("/")


@dataclass
class AuditBucket:
    bucket: str
    prefix: str = ""
    region: Optional[str] = None
    endpoint_url: Optional[str] = None
    retention_days: int = DEFAULT_RETENTION_DAYS
    kms_key_id: Optional[str] = None

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> "AuditBucket":
        bucket, prefix = parse_bucket_uri(uri)
        return cls(bucket, prefix, **kwargs)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, record: dict[str, Any]) -> str:
        name = f"{int(record['seq']):012d}-{record['hash']}.json"
        return f"{self.prefix}/{name}" if self.prefix else name

    def _client(self):
        import boto3
        from botocore.config import Config

        cfg = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})
        return boto3.client("s3", region_name=self.region, endpoint_url=self.endpoint_url, config=cfg)

    def put(self, record: dict[str, Any], now: Optional[dt.datetime] = None) -> str:
        """Upload one record; returns its key. Raises AuditBucketError with one line on any failure."""
        body = _canonical(record)
        now = now or dt.datetime.now(dt.timezone.utc)
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket, "Key": self.key(record), "Body": body, "ContentType": "application/json",
            "ContentMD5": base64.b64encode(hashlib.md5(body).digest()).decode(),  # noqa: S324 — integrity
            "ChecksumSHA256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
            "ObjectLockMode": "COMPLIANCE",
            "ObjectLockRetainUntilDate": now + dt.timedelta(days=self.retention_days),
            "ServerSideEncryption": "aws:kms", "IfNoneMatch": "*"}
        if self.kms_key_id:
            kwargs["SSEKMSKeyId"] = self.kms_key_id
        try:
            self._client().put_object(**kwargs)
        except Exception as exc:  # noqa: BLE001 — any botocore/transport error becomes one line
            raise AuditBucketError(f"{self.uri}: upload of {kwargs['Key']} failed: {_one_line(exc)}") from None
        return kwargs["Key"]

    def keys(self) -> list[str]:
        try:
            pages = self._client().get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else "")
            return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))
        except Exception as exc:  # noqa: BLE001
            raise AuditBucketError(f"{self.uri}: listing failed: {_one_line(exc)}") from None

    def get(self, key: str) -> bytes:
        try:
            return self._client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:  # noqa: BLE001
            raise AuditBucketError(f"{self.uri}: reading {key} failed: {_one_line(exc)}") from None

    def verify(self, path: Path) -> tuple[bool, str]:
        """Every local record has its object with identical bytes, and the bucket's last object is the local head.

        Call after the local chain verified. Returns (ok, one-line message naming the first mismatch)."""
        with open(path, "rb") as fh:
            lines = [line.rstrip(b"\n") for line in fh if line.strip()]
        stored = self.keys()
        present = set(stored)
        for line in lines:
            record = json.loads(line)
            key = self.key(record)
            if key not in present:
                return False, f"{self.uri}: record seq {record['seq']} ({key}) is missing from the bucket"
            if self.get(key) != line:
                return False, f"{self.uri}: record seq {record['seq']} ({key}) differs from the local log"
        expected_last = self.key(json.loads(lines[-1])) if lines else None
        last = stored[-1] if stored else None
        if last != expected_last:
            return False, (f"{self.uri}: the bucket's last object is {last} but the local head is {expected_last} "
                           f"(records were removed from the end of the local log)")
        return True, f"{self.uri}: ok — {len(lines)} record(s) stored, last object is the local head"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
