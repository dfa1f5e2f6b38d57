#!/usr/bin/env python3
"""nginx's real-IP settings for a host behind CloudFront, from AWS's ip-ranges.json.

    cloudfront_realip.py ip-ranges.json >/etc/nginx/conf.d/00-cloudfront-realip.conf

nginx believes X-Forwarded-For only from CloudFront's origin-facing addresses (the
CLOUDFRONT_ORIGIN_FACING service, IPv4 and IPv6), and with real_ip_recursive takes the right-most
address that is not one of them: the viewer CloudFront appended. A request straight to port 80
cannot claim an address. Used by infra/host/bootstrap.sh (the front-end host, refreshed daily);
tests/e2e/test_cloudfront_client_address.py puts its output in front of frontend/nginx.conf.
"""

import json
import sys


def realip_conf(data: dict) -> str:
    service = "CLOUDFRONT_ORIGIN_FACING"
    prefixes = sorted({p["ip_prefix"] for p in data["prefixes"] if p["service"] == service})
    prefixes += sorted({p["ipv6_prefix"] for p in data.get("ipv6_prefixes", []) if p["service"] == service})
    if not prefixes:
        raise ValueError(f"no {service} prefix in ip-ranges.json")
    lines = [f"# Written by infra/host/bootstrap.sh from ip-ranges.json ({service})."]
    lines += [f"set_real_ip_from {prefix};" for prefix in prefixes]
    lines += ["real_ip_header X-Forwarded-For;", "real_ip_recursive on;"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: cloudfront_realip.py ip-ranges.json", file=sys.stderr)
        sys.exit(2)
    with open(sys.argv[1], encoding="utf-8") as f:
        sys.stdout.write(realip_conf(json.load(f)))
