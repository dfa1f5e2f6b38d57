/*
 * A stand-in for a broken release, for scripts/test-deploy.sh: built static with musl-gcc and
 * run FROM scratch like the real image (this machine can pull no base image).
 *
 * By default it listens on LISTEN_ADDR (IPv4 ADDRESS:PORT, as the deploy script sets it) and
 * answers every request 503, forever: a release that starts but never becomes ready (the deploy
 * must time out). With NEVER_READY_MODE=exit-now (set in the image, which the service's env file
 * does not override) it exits 1 at once: a release that crashes at start-up (the deploy must
 * notice without waiting for the timeout).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

int main(void) {
    const char *mode = getenv("NEVER_READY_MODE");
    if (mode != NULL && strcmp(mode, "exit-now") == 0) {
        fputs("never-ready: exiting at once, as a crashing release would\n", stderr);
        return 1;
    }
    /* PID 1 in a container ignores SIGTERM unless it handles it: stop promptly when removed. */
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);

    const char *listen_addr = getenv("LISTEN_ADDR");
    if (listen_addr == NULL) listen_addr = "0.0.0.0:8080";
    char host[64];
    const char *colon = strrchr(listen_addr, ':');
    if (colon == NULL || (size_t)(colon - listen_addr) >= sizeof host) {
        fprintf(stderr, "never-ready: LISTEN_ADDR %s is not IPv4 ADDRESS:PORT\n", listen_addr);
        return 2;
    }
    memcpy(host, listen_addr, (size_t)(colon - listen_addr));
    host[colon - listen_addr] = '\0';

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "never-ready: %s is not an IPv4 address\n", host);
        return 2;
    }
    int server = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (server < 0 || bind(server, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(server, 64) != 0) {
        perror("never-ready: cannot listen");
        return 2;
    }
    fprintf(stderr, "never-ready: listening on %s and answering 503 to everything\n", listen_addr);

    static const char reply[] =
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Length: 12\r\n"
        "Connection: close\r\n"
        "\r\n"
        "never ready\n";
    for (;;) {
        int client = accept(server, NULL, NULL);
        if (client < 0) continue;
        char request[2048];
        (void)read(client, request, sizeof request);
        (void)write(client, reply, sizeof reply - 1);
        close(client);
    }
}
