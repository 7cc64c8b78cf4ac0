#!/usr/bin/env python3
"""An independent gRPC client of connector-executor: Python `grpcio` with stubs generated from
proto/, calling ConnectorExecutor/ExecuteTool with an agent's API key as a Bearer
`authorization` metadata entry.

Prints one JSON object: on success {"code": "OK", "output": <output_json parsed>, "is_error",
"route", "credential_version"}; on an RPC error {"code": <status name>, "message": <details>}.
"""
import argparse
import json
import pathlib
import sys
import tempfile

import grpc

from grpc_peer import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", required=True, help="host:port of connector-executor")
    parser.add_argument("--proto-dir", required=True, type=pathlib.Path)
    parser.add_argument("--key", required=True, help="the agent's API key")
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--connection", required=True)
    parser.add_argument("--identifier", required=True)
    parser.add_argument("--tool", required=True)
    parser.add_argument("--input", default="{}", help="the tool input as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out:
        generate(args.proto_dir.resolve(), pathlib.Path(out))
        sys.path.insert(0, out)
        from agentauth.executor.v1 import connector_executor_pb2 as pb
        from agentauth.executor.v1 import connector_executor_pb2_grpc as rpc

        with grpc.insecure_channel(args.addr) as channel:
            stub = rpc.ConnectorExecutorStub(channel)
            request = pb.ExecuteToolRequest(
                tenant=args.tenant,
                connection_name=args.connection,
                identifier=args.identifier,
                tool_name=args.tool,
                input_json=args.input,
            )
            try:
                response = stub.ExecuteTool(
                    request,
                    metadata=[("authorization", f"Bearer {args.key}")],
                    timeout=30,
                )
            except grpc.RpcError as error:
                print(json.dumps({"code": error.code().name, "message": error.details()}))
                return
            print(
                json.dumps(
                    {
                        "code": "OK",
                        "output": json.loads(response.output_json),
                        "is_error": response.is_error,
                        "route": pb.Route.Name(response.route),
                        "credential_version": response.credential_version,
                    }
                )
            )


if __name__ == "__main__":
    main()
