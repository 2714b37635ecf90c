"""AWS clients for the audit and bootstrap: one session, cached thread-safe clients, retries with backoff, an
endpoint override for tests (moto server) and a log of every API operation called (the IAM policy is checked
against it)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

import boto3
import botocore.config
import botocore.exceptions

DEFAULT_MAX_ATTEMPTS = 8  # standard retry mode: exponential backoff with jitter on throttling and 5xx

ACCESS_DENIED_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError",
    "AuthorizationErrorException", "Forbidden", "403", "UnauthorizedException", "AuthFailure",
})
CREDENTIAL_CODES = frozenset({"InvalidClientTokenId", "UnrecognizedClientException", "InvalidAccessKeyId",
                              "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException"})

# IAM action names that differ from "<service prefix>:<OperationName>".
IAM_ACTION_OVERRIDES = {
    ("s3", "ListBuckets"): "s3:ListAllMyBuckets",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "GetBucketEncryption"): "s3:GetEncryptionConfiguration",
    ("s3", "PutBucketEncryption"): "s3:PutEncryptionConfiguration",
    ("s3", "GetPublicAccessBlock"): "s3:GetBucketPublicAccessBlock",
    ("s3", "PutPublicAccessBlock"): "s3:PutBucketPublicAccessBlock",
    ("s3", "GetBucketReplication"): "s3:GetReplicationConfiguration",
    ("s3", "GetBucketLocation"): "s3:GetBucketLocation",
    ("s3", "PutBucketTagging"): "s3:PutBucketTagging",
    ("logs", "ListTagsLogGroup"): "logs:ListTagsLogGroup",
}
IAM_PREFIX = {"sts": "sts", "s3": "s3", "kms": "kms", "ec2": "ec2", "eks": "eks", "rds": "rds",
              "elasticache": "elasticache", "logs": "logs"}


class EnvironmentProblem(Exception):
    """No credentials, an unreachable endpoint, the wrong account: exit 3."""


def iam_action(service: str, operation: str) -> str:
    return IAM_ACTION_OVERRIDES.get((service, operation), f"{IAM_PREFIX.get(service, service)}:{operation}")


def error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code") or exc.response.get("ResponseMetadata", {})
                   .get("HTTPStatusCode", "ClientError"))
    return type(exc).__name__


def describe_error(exc: BaseException) -> str:
    """One line: the error code and AWS's message (or the connection failure)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        message = exc.response.get("Error", {}).get("Message") or str(exc)
        return f"{error_code(exc)}: {message}"
    return f"{type(exc).__name__}: {exc}"


def is_access_denied(exc: BaseException) -> bool:
    return isinstance(exc, botocore.exceptions.ClientError) and error_code(exc) in ACCESS_DENIED_CODES


def is_connection_problem(exc: BaseException) -> bool:
    return isinstance(exc, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
                            botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError))


@dataclass
class AwsContext:
    """Everything that talks to AWS goes through here.

    ``endpoint_url`` (tests: the moto server) applies to every service unless ``AWS_ENDPOINT_URL_<SERVICE>`` is set
    for that service, which wins (botocore's own precedence for service-specific endpoints)."""

    endpoint_url: Optional[str] = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    profile: Optional[str] = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    api_calls: set[tuple[str, str]] = field(default_factory=set)
    _session: Any = None
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _config(self) -> botocore.config.Config:
        return botocore.config.Config(
            retries={"mode": "standard", "max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
            max_pool_connections=32,
            s3={"addressing_style": "path"} if self.endpoint_url else None,
        )

    def _endpoint_for(self, service: str) -> Optional[str]:
        specific = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}")
        return specific or self.endpoint_url

    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        with self._lock:  # boto3 sessions are not thread-safe; the clients they make are
            if key not in self._clients:
                if self._session is None:
                    self._session = boto3.session.Session(profile_name=self.profile)
                client = self._session.client(service, region_name=region, endpoint_url=self._endpoint_for(service),
                                              config=self._config())
                client.meta.events.register("before-call", self._record)
                self._clients[key] = client
            return self._clients[key]

    def partition(self, region: str) -> str:
        with self._lock:
            if self._session is None:
                self._session = boto3.session.Session(profile_name=self.profile)
            try:
                return self._session.get_partition_for_region(region)
            except Exception:  # noqa: BLE001 — a region botocore does not know yet: the commercial partition
                return "aws"

    def _record(self, model: Any, **_: Any) -> None:
        self.api_calls.add((model.service_model.service_name, model.name))

    def iam_actions(self) -> list[str]:
        return sorted({iam_action(service, op) for service, op in self.api_calls if service != "sts"})

    def account_id(self, region: str) -> str:
        """The caller's account (sts:GetCallerIdentity needs no permission); environment problems raise."""
        try:
            return self.client("sts", region).get_caller_identity()["Account"]
        except botocore.exceptions.NoCredentialsError:
            raise EnvironmentProblem("no AWS credentials found (set AWS_PROFILE, AWS_ACCESS_KEY_ID/"
                                     "AWS_SECRET_ACCESS_KEY, or run where an instance/role identity exists)") from None
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in CREDENTIAL_CODES:
                raise EnvironmentProblem(f"the AWS credentials were rejected: {describe_error(exc)}") from None
            raise EnvironmentProblem(f"sts:GetCallerIdentity failed: {describe_error(exc)}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise EnvironmentProblem(f"cannot reach AWS STS: {exc}") from None
