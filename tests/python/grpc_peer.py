#!/usr/bin/env python3
"""An independent gRPC peer for the end-to-end tests.

Generates Python stubs from proto/ with grpcio-tools, then calls a running agentauth service:
the standard health check (no key), and one unary RPC without a key and, if --key is given,
with it. Prints one JSON object with the status codes it saw.
"""
import argparse
import importlib
import json
import pathlib
import sys
import tempfile

import grpc
from google.protobuf import json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_tools import protoc


def generate(proto_dir: pathlib.Path, out: pathlib.Path) -> None:
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    files = [str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto")]
    code = protoc.main(
        ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", *files]
    )
    if code != 0:
        sys.exit(f"protoc failed with {code}")
    for package in {p.parent for p in out.rglob("*_pb2.py")}:
        while package != out:
            (package / "__init__.py").touch()
            package = package.parent


def call(channel, full_method: str, request_json: str, key):
    service, method = full_method.rsplit("/", 1)
    package, service_name = service.rsplit(".", 1)
    module = importlib.import_module(package + "." + snake(service_name) + "_pb2")
    descriptor = module.DESCRIPTOR.services_by_name[service_name].methods_by_name[method]
    request = json_format.Parse(request_json, message_factory.GetMessageClass(descriptor.input_type)())
    response_class = message_factory.GetMessageClass(descriptor.output_type)
    rpc = channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    metadata = [("authorization", f"Bearer {key}")] if key else []
    try:
        rpc(request, metadata=metadata, timeout=10)
        return "OK"
    except grpc.RpcError as error:
        return error.code().name


def snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", required=True, help="host:port of the service")
    parser.add_argument("--proto-dir", required=True, type=pathlib.Path)
    parser.add_argument("--method", required=True, help="e.g. agentauth.audit.v1.AuditLog/Query")
    parser.add_argument("--request", default="{}", help="the request as protobuf JSON")
    parser.add_argument("--key", help="an API key to try the RPC with")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out:
        generate(args.proto_dir.resolve(), pathlib.Path(out))
        sys.path.insert(0, out)
        channel = grpc.insecure_channel(args.addr)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        result = {
            "health": health_pb2.HealthCheckResponse.ServingStatus.Name(health.status),
            "without_key": call(channel, args.method, args.request, None),
        }
        if args.key:
            result["with_key"] = call(channel, args.method, args.request, args.key)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
