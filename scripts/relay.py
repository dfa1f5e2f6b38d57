"""Forwards TCP from Docker's bridge gateway to services on this machine's loopback.

    python3 scripts/relay.py PORT[:TARGET_PORT] ...

`sam local invoke` and `sam local start-api` run each function in a container on Docker's default
bridge network, whatever `--docker-network host` says (SAM CLI 1.170 only skips connecting the
container to a named network; it never asks for the host's network): 127.0.0.1 in there is the
container itself, and PostgreSQL (scripts/pg.sh) and moto (functions/deploy/tests/moto_server.py)
listen on the host's 127.0.0.1 only. This relay listens on the bridge's gateway address (docker0,
usually 172.17.0.1), which the containers reach as `host.docker.internal` (samconfig.toml adds
`host.docker.internal:host-gateway`), and forwards each connection to 127.0.0.1:TARGET_PORT. The
gateway address is reachable from this machine and its containers only, and connections arrive at
the service from 127.0.0.1, as its access rules expect.

Prints one JSON line ({"gateway": IP, "ports": {"LISTEN": TARGET, ...}}) once listening, then
relays until interrupted (Ctrl-C) or, with --until-stdin-closes, until its standard input closes.
tests/sam_local imports it (start()) instead.
"""

import argparse
import json
import socket
import subprocess
import sys
import threading


def bridge_gateway():
    """The IPv4 address of Docker's default bridge on this machine (docker0 unless renamed)."""
    name = "docker0"
    try:
        options = subprocess.run(
            ["docker", "network", "inspect", "bridge", "--format", "{{json .Options}}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        name = json.loads(options).get("com.docker.network.bridge.name", name)
    except (OSError, subprocess.CalledProcessError, ValueError):
        pass
    shown = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", name], check=True, capture_output=True, text=True
    ).stdout.split()
    # "5: docker0    inet 172.17.0.1/16 brd ..."
    return shown[shown.index("inet") + 1].split("/")[0]


def _pipe(source, sink):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def _serve(listener, target_port):
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", target_port))
        except OSError:
            client.close()
            continue

        def both(client=client, upstream=upstream):
            there = threading.Thread(target=_pipe, args=(client, upstream), daemon=True)
            there.start()
            _pipe(upstream, client)
            there.join()
            client.close()
            upstream.close()

        threading.Thread(target=both, daemon=True).start()


def start(host, listen_port, target_port):
    """Relays host:listen_port (0: a free port) to 127.0.0.1:target_port in daemon threads.
    Returns the port it listens on."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, listen_port))
    listener.listen(64)
    threading.Thread(target=_serve, args=(listener, target_port), daemon=True).start()
    return listener.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ports", nargs="+", help="PORT (the same port on the gateway) or LISTEN:TARGET")
    parser.add_argument("--until-stdin-closes", action="store_true")
    arguments = parser.parse_args()
    gateway = bridge_gateway()
    ports = {}
    for spec in arguments.ports:
        listen, _, target = spec.partition(":")
        target = int(target or listen)
        ports[str(start(gateway, int(listen), target))] = target
    print(json.dumps({"gateway": gateway, "ports": ports}), flush=True)
    try:
        if arguments.until_stdin_closes:
            sys.stdin.read()
        else:
            threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
