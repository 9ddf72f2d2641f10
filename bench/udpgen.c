/* udpgen: paced small UDP datagrams to a loopback port with sendmmsg(2).
 *
 *   udpgen DST_IP DST_PORT RATE_PPS DURATION_S PAYLOAD_BYTES [SINK]
 *
 * RATE_PPS 0 sends as fast as it can. Stops after DURATION_S or RATE*DURATION packets,
 * whichever comes first. With SINK=1 it also binds a receiving socket on DST_PORT with a
 * tiny buffer that it never reads, so the kernel drops the datagrams at the socket and
 * sends no ICMP port-unreachable. Prints "sent N elapsed S" on stdout.
 * Built at run time by bench/capture.py (gcc -O2); only loopback destinations are accepted.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s DST_IP DST_PORT RATE DURATION PAYLOAD [SINK]\n", argv[0]);
        return 2;
    }
    struct sockaddr_in dst = {0};
    dst.sin_family = AF_INET;
    dst.sin_port = htons((unsigned short)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1 || (ntohl(dst.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "udpgen: only 127.0.0.0/8 destinations\n");
        return 2;
    }
    double rate = atof(argv[3]);
    double duration = atof(argv[4]);
    int payload = atoi(argv[5]);
    int sink = argc > 6 ? atoi(argv[6]) : 0;
    if (payload < 0 || payload > 1400 || duration <= 0 || duration > 600) {
        fprintf(stderr, "udpgen: bad payload or duration\n");
        return 2;
    }
    int rx = -1;
    if (sink) {
        rx = socket(AF_INET, SOCK_DGRAM, 0);
        int one = 1, small = 1;
        setsockopt(rx, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(rx, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        if (bind(rx, (struct sockaddr *)&dst, sizeof dst) < 0) {
            perror("udpgen: bind sink");
            return 1;
        }
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) {
        perror("udpgen: socket");
        return 1;
    }
    char buf[1400];
    memset(buf, 'x', sizeof buf);
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = buf;
        iov[i].iov_len = (size_t)payload;
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long long limit = rate > 0 ? (long long)(rate * duration) : -1;
    int batch = BATCH;
    if (rate > 0 && rate < 20000) batch = 1 + (int)(rate / 2000); /* smoother at low rates */
    long long sent = 0;
    double t0 = now(), deadline = t0 + duration;
    for (;;) {
        double t = now();
        if (t >= deadline || (limit >= 0 && sent >= limit)) break;
        if (rate > 0) {
            double due = t0 + sent / rate;
            if (due > t) {
                double d = due - t;
                struct timespec ts = {(time_t)d, (long)((d - (time_t)d) * 1e9)};
                nanosleep(&ts, NULL);
                continue;
            }
        }
        int n = batch;
        if (limit >= 0 && limit - sent < n) n = (int)(limit - sent);
        int r = sendmmsg(fd, msgs, (unsigned)n, 0);
        if (r < 0) {
            if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN || errno == ECONNREFUSED) continue;
            perror("udpgen: sendmmsg");
            break;
        }
        sent += r;
    }
    double elapsed = now() - t0;
    printf("sent %lld elapsed %.6f\n", sent, elapsed);
    fflush(stdout);
    if (rx >= 0) close(rx);
    close(fd);
    return 0;
}
