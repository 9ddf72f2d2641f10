/* tcpgen: many-flow TCP load on loopback for bench/manyflow.py (compiled at run time).
 *
 *   tcpgen PORT PERSIST MSG_RATE NEW_RATE SECONDS MSG_SIZE LOGDIR
 *
 * Two processes. The server (a child) listens on 127.0.0.1:PORT, echoes whatever it reads,
 * and closes a connection on EOF. The client (this process) holds PERSIST connections for
 * the whole run and sends MSG_RATE messages of MSG_SIZE bytes a second over them in turns
 * (each one echoed back), and opens NEW_RATE new connections a second: connect, one request
 * of MSG_SIZE bytes, the echo, close. Bounded: SECONDS <= 60, at most MAX_SHORT short
 * connections open at once, an alarm kills both after SECONDS + 30 s.
 *
 * Ground truth for the benchmark: each process writes LOGDIR/{client,server}.log, a line
 * "pid P listen_fd L" and then one line per connection it had:
 *   "C|S client_port fd t_open t_close kind"   (kind: p persistent, s short; CLOCK_REALTIME)
 * The client prints its totals on stdout at the end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXFD 65536
#define MAX_SHORT 4000

struct rec { int port, fd; double t0, t1; char kind; };
static struct rec *recs; static size_t nrec, caprec;
static int kind_of[MAXFD];   /* 0 none, 1 persistent, 2 short connecting, 3 short sent, 4 server conn */
static int port_of[MAXFD], got_of[MAXFD];
static double open_of[MAXFD];
static volatile sig_atomic_t stop_flag;

static double now_real(void) { struct timespec t; clock_gettime(CLOCK_REALTIME, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static double now_mono(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void on_term(int s) { (void)s; stop_flag = 1; }

static void add_rec(int port, int fd, double t0, double t1, char kind) {
    if (nrec == caprec) {
        caprec = caprec ? caprec * 2 : 4096;
        recs = realloc(recs, caprec * sizeof *recs);
        if (!recs) { perror("realloc"); exit(2); }
    }
    recs[nrec++] = (struct rec){port, fd, t0, t1, kind};
}

static void write_log(const char *dir, const char *name, char side, int listen_fd) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) { perror(path); return; }
    fprintf(f, "pid %d listen_fd %d\n", getpid(), listen_fd);
    for (size_t i = 0; i < nrec; i++)
        fprintf(f, "%c %d %d %.6f %.6f %c\n", side, recs[i].port, recs[i].fd, recs[i].t0, recs[i].t1, recs[i].kind);
    fclose(f);
}

static int peer_port(int fd, int local) {
    struct sockaddr_in a; socklen_t l = sizeof a;
    if ((local ? getsockname(fd, (struct sockaddr *)&a, &l) : getpeername(fd, (struct sockaddr *)&a, &l)) < 0) return 0;
    return ntohs(a.sin_port);
}

static void serve(int ls, double seconds, const char *dir) {
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    char buf[65536];
    double end = now_mono() + seconds + 10;
    while (!stop_flag && now_mono() < end) {
        int n = epoll_wait(ep, evs, 256, 50);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                for (;;) {
                    struct sockaddr_in a; socklen_t l = sizeof a;
                    int c = accept4(ls, (struct sockaddr *)&a, &l, SOCK_NONBLOCK);
                    if (c < 0) break;
                    if (c >= MAXFD) { close(c); continue; }
                    kind_of[c] = 4; port_of[c] = ntohs(a.sin_port); open_of[c] = now_real();
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            for (;;) {
                ssize_t r = read(fd, buf, sizeof buf);
                if (r > 0) { if (write(fd, buf, (size_t)r) < 0) { /* full: dropped, counted by the bench */ } continue; }
                if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    add_rec(port_of[fd], fd, open_of[fd], now_real(), 'x');
                    kind_of[fd] = 0;
                    close(fd);
                }
                break;
            }
        }
    }
    for (int fd = 0; fd < MAXFD; fd++)
        if (kind_of[fd] == 4) { add_rec(port_of[fd], fd, open_of[fd], now_real(), 'x'); close(fd); }
    write_log(dir, "server.log", 'S', ls);
}

int main(int argc, char **argv) {
    if (argc != 8) { fprintf(stderr, "usage: tcpgen PORT PERSIST MSG_RATE NEW_RATE SECONDS MSG_SIZE LOGDIR\n"); return 2; }
    int port = atoi(argv[1]), persist = atoi(argv[2]);
    double msg_rate = atof(argv[3]), new_rate = atof(argv[4]), seconds = atof(argv[5]);
    int size = atoi(argv[6]);
    const char *dir = argv[7];
    if (seconds <= 0 || seconds > 60 || persist < 0 || persist > 10000 || size < 1 || size > 60000) {
        fprintf(stderr, "tcpgen: SECONDS in (0, 60], PERSIST in [0, 10000], MSG_SIZE in [1, 60000]\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }
    alarm((unsigned)seconds + 30);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_term);

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 4096) < 0) { perror("tcpgen: listen"); return 1; }
    pid_t server = fork();
    if (server < 0) { perror("fork"); return 1; }
    if (server == 0) { serve(ls, seconds, dir); return 0; }
    close(ls);

    int ep = epoll_create1(0);
    struct epoll_event evs[512];
    int *pfd = calloc((size_t)persist + 1, sizeof(int));
    char *msg = malloc((size_t)size), buf[65536];
    memset(msg, 'm', (size_t)size);
    long long sent = 0, skipped = 0, opened = 0, done = 0, failed = 0, echoed = 0, refused_new = 0;
    int n_short = 0;
    for (int i = 0; i < persist; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0 || c >= MAXFD || connect(c, (struct sockaddr *)&sa, sizeof sa) < 0) { perror("tcpgen: connect"); return 1; }
        fcntl(c, F_SETFL, O_NONBLOCK);
        pfd[i] = c; kind_of[c] = 1; port_of[c] = peer_port(c, 1); open_of[c] = now_real();
        struct epoll_event e = {.events = EPOLLIN, .data.fd = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
    }
    double t0 = now_mono(), end = t0 + seconds, t_start = now_real();
    long long rr = 0;
    int draining = 0;
    double drain_end = end + 2.0;
    for (;;) {
        double t = now_mono();
        if (!draining && t >= end) draining = 1;
        if (draining && (n_short == 0 || t >= drain_end)) break;
        if (!draining) {
            long long due = persist ? (long long)(msg_rate * (t - t0)) - sent - skipped : 0;
            if (due > 4000) due = 4000;
            for (long long k = 0; k < due; k++) {
                int c = pfd[rr++ % persist];
                if (write(c, msg, (size_t)size) == size) sent++; else skipped++;
            }
            long long due_new = (long long)(new_rate * (t - t0)) - opened - refused_new;
            if (due_new > 200) due_new = 200;
            for (long long k = 0; k < due_new; k++) {
                if (n_short >= MAX_SHORT) { refused_new++; continue; }
                int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
                if (c < 0 || c >= MAXFD) { if (c >= 0) close(c); failed++; opened++; continue; }
                int r = connect(c, (struct sockaddr *)&sa, sizeof sa);
                opened++;
                if (r < 0 && errno != EINPROGRESS) { close(c); failed++; continue; }
                kind_of[c] = 2; port_of[c] = peer_port(c, 1); open_of[c] = now_real(); got_of[c] = 0;
                n_short++;
                struct epoll_event e = {.events = EPOLLOUT | EPOLLIN, .data.fd = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
            }
        }
        int n = epoll_wait(ep, evs, 512, 1);
        for (int i = 0; i < n; i++) {
            int c = evs[i].data.fd;
            if (kind_of[c] == 1) {
                ssize_t r;
                while ((r = read(c, buf, sizeof buf)) > 0) echoed += r;
                continue;
            }
            if (kind_of[c] == 2 && (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
                int err = 0; socklen_t l = sizeof err;
                getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &l);
                if (err || write(c, msg, (size_t)size) != size) {
                    failed++; n_short--; kind_of[c] = 0; close(c); continue;
                }
                kind_of[c] = 3;
                struct epoll_event e = {.events = EPOLLIN, .data.fd = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c, &e);
                continue;
            }
            if (kind_of[c] == 3) {
                ssize_t r;
                while ((r = read(c, buf, sizeof buf)) > 0) got_of[c] += (int)r;
                if (got_of[c] >= size || r == 0 || (r < 0 && errno != EAGAIN)) {
                    if (got_of[c] >= size) done++; else failed++;
                    add_rec(port_of[c], c, open_of[c], now_real(), 's');
                    n_short--; kind_of[c] = 0; close(c);
                }
            }
        }
    }
    double elapsed = now_mono() - t0;
    for (int fd = 0; fd < MAXFD; fd++)
        if (kind_of[fd] == 2 || kind_of[fd] == 3) { failed++; close(fd); kind_of[fd] = 0; }
    /* the persistent ones: drain the last echoes, then close */
    usleep(100000);
    for (int i = 0; i < persist; i++) {
        ssize_t r;
        while ((r = read(pfd[i], buf, sizeof buf)) > 0) echoed += r;
        add_rec(port_of[pfd[i]], pfd[i], open_of[pfd[i]], now_real(), 'p');
        close(pfd[i]);
    }
    write_log(dir, "client.log", 'C', -1);
    usleep(300000);  /* the server reads the last EOFs */
    kill(server, SIGTERM);
    int st;
    waitpid(server, &st, 0);
    printf("client_pid %d server_pid %d persist %d msgs %lld skipped %lld echoed_bytes %lld new %lld done %lld failed %lld "
           "not_opened %lld elapsed %.6f t_start %.6f\n",
           getpid(), server, persist, sent, skipped, echoed, opened, done, failed, refused_new, elapsed, t_start);
    return 0;
}
