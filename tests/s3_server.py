"""An S3-compatible server for the test session: moto's server mode, an emulator of the S3 API
over real HTTP (no S3-compatible server such as MinIO can be installed offline here), driven
by the same boto3 client code as production."""

import os
import subprocess
import sys

import boto3

from tests.gateway_harness import free_port, wait_until_http

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "peftserve-test", "AWS_SECRET_ACCESS_KEY": "peftserve-test-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._buckets = 0

    def start(self) -> "S3Server":
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, **CREDENTIALS})
        if not wait_until_http(f"{self.url}/", 60):
            self.stop()
            raise TimeoutError("the S3 emulator did not start")
        return self

    def client(self):
        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")

    def new_bucket(self) -> str:
        self._buckets += 1
        name = f"peftserve-{self._buckets}"
        self.client().create_bucket(Bucket=name)
        return name

    def gateway_env(self, bucket: str) -> dict[str, str]:
        """Environment of a gateway process storing its blobs here."""
        return {**CREDENTIALS, "PEFTSERVE_BLOB_STORE": "s3", "PEFTSERVE_S3_BUCKET": bucket,
                "PEFTSERVE_S3_ENDPOINT_URL": self.url}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
