#!/usr/bin/env python3
"""Measure one Lambda function's time from process start to first handled request.

Runs the release `bootstrap` of a function (built by `cargo lambda build`)
against a minimal Lambda Runtime API served here on 127.0.0.1, with its
DynamoDB client pointed at moto's server on 127.0.0.1 (OSDEPLOY_AWS_ENDPOINT).
Each run starts a new process, hands it one API Gateway (HTTP API, payload
2.0) event for `PUT /mdm/connect` with an Idle result from a device that
never enrolled, and times:

- init: process start until the function requests its first event;
- first response: process start until it posts the response (one DynamoDB
  Query against moto, then a 403).

Usage: scripts/lambda_cold_start.py BOOTSTRAP MOTO_ENDPOINT [RUNS]
"""

import base64
import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import boto3

IDLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>UDID</key><string>COLD-START-DEVICE</string>
<key>Status</key><string>Idle</string>
</dict></plist>"""


def api_gateway_event():
    return {
        "version": "2.0",
        "routeKey": "PUT /mdm/connect",
        "rawPath": "/mdm/connect",
        "rawQueryString": "",
        "headers": {"content-type": "application/x-apple-aspen-mdm", "host": "example.execute-api.us-east-1.amazonaws.com"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "example",
            "domainName": "example.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "example",
            "http": {"method": "PUT", "path": "/mdm/connect", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.10", "userAgent": "MDM/1.0"},
            "requestId": str(uuid.uuid4()),
            "routeKey": "PUT /mdm/connect",
            "stage": "$default",
            "time": "22/Aug/2026:09:00:00 +0000",
            "timeEpoch": 1787389200000,
        },
        "body": base64.b64encode(IDLE).decode(),
        "isBase64Encoded": True,
    }


class Runtime(http.server.BaseHTTPRequestHandler):
    """The two Runtime API calls a function makes for one invocation."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        run = self.server.run
        if not self.path.endswith("/runtime/invocation/next"):
            self.send_error(404)
            return
        if run["asked"] is not None:
            # Second request for work: hold it until the process is stopped.
            run["done"].wait(10)
            try:
                self.send_error(503)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        run["asked"] = time.perf_counter()
        body = json.dumps(api_gateway_event()).encode()
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", run["request_id"])
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:mdm-connect")
        self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        run = self.server.run
        length = int(self.headers.get("Content-Length", "0"))
        payload = self.rfile.read(length)
        run["responded"] = time.perf_counter()
        run["response"] = payload
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        run["done"].set()


def one_run(bootstrap, endpoint, table):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Runtime)
    server.run = {"asked": None, "responded": None, "response": None, "done": threading.Event(), "request_id": str(uuid.uuid4())}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": "mdm-connect",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_STREAM_NAME": "cold-start",
        "AWS_LAMBDA_LOG_GROUP_NAME": "cold-start",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "OSDEPLOY_AWS_ENDPOINT": endpoint,
        "OSDEPLOY_STATE_TABLE": table,
        "OSDEPLOY_EVENTS_TABLE": table + "-events",
        "OSDEPLOY_LOG": "warn",
    }
    started = time.perf_counter()
    process = subprocess.Popen([bootstrap], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    finished = server.run["done"].wait(30)
    process.kill()
    process.wait()
    server.shutdown()
    if not finished:
        raise SystemExit(f"the function posted no response within 30 s: {process.stderr.read().decode(errors='replace')[-2000:]}")
    response = json.loads(server.run["response"])
    return (server.run["asked"] - started) * 1000, (server.run["responded"] - started) * 1000, response.get("statusCode")


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    bootstrap, endpoint = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    if not endpoint.startswith(("http://127.0.0.1:", "http://localhost:")):
        raise SystemExit("the endpoint must be moto's server on 127.0.0.1")
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    table = f"cold-start-{uuid.uuid4().hex[:8]}-state"
    dynamodb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    inits, firsts, statuses = [], [], set()
    for _ in range(runs):
        init, first, status = one_run(bootstrap, endpoint, table)
        inits.append(init)
        firsts.append(first)
        statuses.add(status)
    size = os.path.getsize(bootstrap)
    print(f"binary: {bootstrap} ({size / 1024 / 1024:.1f} MiB)")
    print(f"runs: {runs}, response status codes: {sorted(statuses)}")
    print(f"init (start to first event request): median {statistics.median(inits):.1f} ms, min {min(inits):.1f}, max {max(inits):.1f}")
    print(f"first response (start to response, one DynamoDB Query on moto): median {statistics.median(firsts):.1f} ms, min {min(firsts):.1f}, max {max(firsts):.1f}")


if __name__ == "__main__":
    main()
