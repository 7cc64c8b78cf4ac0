#!/usr/bin/env python3
"""Reads one task N times with the official Python `asana` SDK (5.x), one request at a time,
and prints the latencies' p50 and p99 in microseconds as JSON: the code a user would write by
hand instead of calling agentauth, measured for connector-executor's benchmark.

    bench_asana_sdk.py --host http://127.0.0.1:PORT/api/1.0 --token PAT --task GID --count 2000
"""

import argparse
import json
import time

import asana
from urllib3.util.retry import Retry


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()

    configuration = asana.Configuration()
    configuration.host = args.host
    configuration.access_token = args.token
    configuration.retry_strategy = Retry(total=0)
    tasks = asana.TasksApi(asana.ApiClient(configuration))

    for _ in range(args.warmup):
        tasks.get_task(args.task, {})
    samples = []
    for _ in range(args.count):
        started = time.perf_counter_ns()
        task = tasks.get_task(args.task, {})
        samples.append((time.perf_counter_ns() - started) / 1000.0)
        assert task["gid"] == args.task
    samples.sort()

    def percentile(p):
        return samples[min(len(samples) - 1, round((len(samples) - 1) * p))]

    print(json.dumps({"p50_us": percentile(0.50), "p99_us": percentile(0.99)}))


if __name__ == "__main__":
    main()
