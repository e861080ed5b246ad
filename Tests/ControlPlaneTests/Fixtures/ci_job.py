"""Prints a GitLab CI job of a template as the bash script a runner would run: the job's
before_script and script (following `extends`), one command after another, stopping at the
first that fails (as GitLab's runner does). Usage: ci_job.py TEMPLATE.yml JOB"""
import sys

import yaml


def resolve(jobs, name):
    job = dict(jobs[name])
    parents = job.pop("extends", [])
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = resolve(jobs, parent)
        merged.update(job)
        job = merged
    return job


def main():
    jobs = yaml.safe_load(open(sys.argv[1]))
    job = resolve(jobs, sys.argv[2])
    lines = ["set -eo pipefail"]
    for key, value in (jobs.get("variables") or {}).items():
        lines.append(f': "${{{key}:={value}}}"; export {key}')
    for key, value in (job.get("variables") or {}).items():
        lines.append(f'export {key}="{value}"')
    for command in (job.get("before_script") or []) + (job.get("script") or []):
        lines.append(command)
    print("\n".join(lines))


main()
