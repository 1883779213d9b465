"""Run scim2-tester's RFC 7643/7644 checks against a SCIM server.

    python3 tests/scim/check.py BASE_URL [TOKEN] [--verbose]

Prints one JSON line: {"passed": N, "failed": N, "skipped": N, "by_status": {...}}
and, with --verbose, one line per check on stderr. A check passes when its
status is SUCCESS, COMPLIANT or ACCEPTABLE; DEVIATION, ERROR and CRITICAL fail.
"""

import json
import sys
from collections import Counter

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

PASS = {Status.SUCCESS, Status.COMPLIANT, Status.ACCEPTABLE}


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    verbose = "--verbose" in sys.argv
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    base_url = args[0].rstrip("/") + "/"
    headers = {"Authorization": f"Bearer {args[1]}"} if len(args) > 1 else {}
    http = Client(base_url=base_url, headers=headers, timeout=10)
    results = check_server(SyncSCIMClient(http))
    counts = Counter(r.status.name for r in results)
    for r in results:
        if verbose:
            rt = f" [{r.resource_type}]" if getattr(r, "resource_type", None) else ""
            reason = (r.reason or "").replace("\n", " ")[:300]
            print(f"{r.status.name:10} {r.title}{rt}: {reason}", file=sys.stderr)
    print(
        json.dumps(
            {
                "passed": sum(1 for r in results if r.status in PASS),
                "failed": sum(
                    1
                    for r in results
                    if r.status not in PASS and r.status != Status.SKIPPED
                ),
                "skipped": counts.get("SKIPPED", 0),
                "by_status": dict(sorted(counts.items())),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
