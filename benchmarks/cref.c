/* cref: the C reference the probe is measured against, in the same run.
 *
 * hold: open and hold N loopback TCP connections as fast as plain C can. Worker
 *   processes (each under its own RLIMIT_NOFILE, raised to its hard limit) each
 *   listen on a port of their own on 127.0.0.1, connect() their share to it
 *   non-blocking in batches, accept4() what the batch completed, and hold both
 *   ends. `-P` workers open at a time (default 2), the next starts when one is done.
 *   The parent prints one line once every worker holds its share:
 *     connections N workers W seconds S rate R slab_per_conn B avail_per_conn B
 *     rss_per_conn B
 *   (Slab and MemAvailable from /proc/meminfo before and after, RSS of every worker
 *   from /proc/PID/statm), holds for -H seconds (or until SIGTERM/SIGINT), then the
 *   workers close with SO_LINGER 0 (RST: no TIME_WAIT left behind).
 *
 * churn: open and close connections as fast as plain C can, for -d seconds: each
 *   of -P workers connect()s to a listener of its own (SO_LINGER 0, so the close is
 *   an RST and no TIME_WAIT stays), accept4()s the other end, closes both. Prints
 *     cycles N workers W seconds S rate R
 *
 * usage: cref hold -n TOTAL [-P PARALLEL] [-H HOLD_SECONDS] [-b BASE_PORT]
 *        cref churn -d SECONDS [-P WORKERS] [-b BASE_PORT]
 * build: cc -O2 -o cref cref.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BATCH 256
#define FD_MARGIN 16

static volatile sig_atomic_t stop_flag;

static void on_stop(int sig) { (void)sig; stop_flag = 1; }

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One /proc/meminfo field, in bytes. */
static long long meminfo(const char *name) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long long kb = -1;
    size_t n = strlen(name);
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, name, n) && line[n] == ':') { kb = atoll(line + n + 1); break; }
    fclose(f);
    return kb * 1024;
}

static long long rss_of(pid_t pid) {
    char path[64];
    long long size = 0, resident = 0;
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    if (fscanf(f, "%lld %lld", &size, &resident) != 2) resident = 0;
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

static int listener(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    int one = 1, s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 65535)) {
        perror("cref: listen");
        exit(2);
    }
    return s;
}

static void close_rst(int *fds, int n) {
    struct linger lg = {1, 0};
    for (int i = 0; i < n; i++) {
        setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fds[i]);
    }
}

/* A worker: share connections to its own listener; both ends held until SIGTERM. */
static void worker(int port, int share, int report) {
    int ls = listener(port), held = 0, n = 0;
    int *fds = malloc(sizeof(int) * 2 * (size_t)share);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    signal(SIGTERM, on_stop);
    while (n < share && !stop_flag) {
        int batch = share - n < BATCH ? share - n : BATCH;
        for (int i = 0; i < batch; i++) {
            int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (c < 0) { perror("cref: socket"); exit(3); }
            if (connect(c, (struct sockaddr *)&a, sizeof a) && errno != EINPROGRESS) {
                perror("cref: connect");
                exit(3);
            }
            fds[held++] = c;
        }
        n += batch;
        for (int got = 0; got < batch;) {  /* the handshakes are done: accept them */
            int s = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
            if (s >= 0) { fds[held++] = s; got++; continue; }
            if (errno != EAGAIN) { perror("cref: accept4"); exit(3); }
            struct pollfd p = {.fd = ls, .events = POLLIN};
            poll(&p, 1, 1000);
        }
    }
    if (write(report, "d", 1) != 1) exit(4);
    while (!stop_flag) pause();
    close_rst(fds, held);
    exit(0);
}

static int hold(long total, int parallel, int hold_s, int base) {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    long per = ((long)rl.rlim_cur - FD_MARGIN) / 2;
    int workers = (int)((total + per - 1) / per);
    pid_t *pids = calloc((size_t)workers, sizeof(pid_t));
    int pipefd[2];
    if (pipe(pipefd)) { perror("cref: pipe"); return 2; }
    long long slab0 = meminfo("Slab"), avail0 = meminfo("MemAvailable");
    double t0 = now();
    int started = 0, done = 0;
    char byte;
    while (done < workers) {
        while (started < workers && started - done < parallel) {
            long share = total / workers + (started < total % workers);
            pid_t pid = fork();
            if (pid == 0) { close(pipefd[0]); worker(base + started, (int)share, pipefd[1]); }
            pids[started++] = pid;
        }
        if (read(pipefd[0], &byte, 1) != 1) { perror("cref: a worker died"); return 3; }
        done++;
    }
    double seconds = now() - t0;
    long long rss = 0;
    for (int i = 0; i < workers; i++) rss += rss_of(pids[i]);
    long long slab = meminfo("Slab") - slab0, avail = avail0 - meminfo("MemAvailable");
    printf("connections %ld workers %d seconds %.3f rate %.1f slab_per_conn %.1f "
           "avail_per_conn %.1f rss_per_conn %.1f\n",
           total, workers, seconds, total / seconds, (double)slab / total,
           (double)avail / total, (double)rss / total);
    fflush(stdout);
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    for (int i = 0; i < hold_s * 10 && !stop_flag; i++) usleep(100000);
    for (int i = 0; i < workers; i++) kill(pids[i], SIGTERM);
    for (int i = 0; i < workers; i++) waitpid(pids[i], NULL, 0);
    return 0;
}

/* A churn worker: connect, accept, close both with RST, until the deadline. */
static void churner(int port, double deadline, int report) {
    int ls = listener(port);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct linger lg = {1, 0};
    long cycles = 0;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    while (now() < deadline) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0) { perror("cref: socket"); exit(3); }
        setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        if (connect(c, (struct sockaddr *)&a, sizeof a)) { perror("cref: connect"); exit(3); }
        int s;
        while ((s = accept4(ls, NULL, NULL, 0)) < 0) {
            if (errno != EAGAIN) { perror("cref: accept4"); exit(3); }
            struct pollfd p = {.fd = ls, .events = POLLIN};
            poll(&p, 1, 1000);
        }
        close(c);
        close(s);
        cycles++;
    }
    if (write(report, &cycles, sizeof cycles) != sizeof cycles) exit(4);
    exit(0);
}

static int churn(double seconds, int workers, int base) {
    int pipefd[2];
    long total = 0, got;
    if (pipe(pipefd)) { perror("cref: pipe"); return 2; }
    double t0 = now(), deadline = t0 + seconds;
    for (int i = 0; i < workers; i++)
        if (fork() == 0) { close(pipefd[0]); churner(base + i, deadline, pipefd[1]); }
    for (int i = 0; i < workers; i++) {
        if (read(pipefd[0], &got, sizeof got) != sizeof got) { perror("cref: worker"); return 3; }
        total += got;
    }
    while (wait(NULL) > 0) {}
    double took = now() - t0;
    printf("cycles %ld workers %d seconds %.3f rate %.1f\n", total, workers, took, total / took);
    return 0;
}

int main(int argc, char **argv) {
    long total = 0;
    int parallel = 2, hold_s = 0, base = 20000, opt;
    double seconds = 0;
    if (argc < 2 || (strcmp(argv[1], "hold") && strcmp(argv[1], "churn"))) {
        fprintf(stderr, "usage: cref hold -n TOTAL [-P PARALLEL] [-H SECONDS] [-b PORT]\n"
                        "       cref churn -d SECONDS [-P WORKERS] [-b PORT]\n");
        return 2;
    }
    optind = 2;
    while ((opt = getopt(argc, argv, "n:P:H:b:d:")) != -1) {
        if (opt == 'n') total = atol(optarg);
        else if (opt == 'P') parallel = atoi(optarg);
        else if (opt == 'H') hold_s = atoi(optarg);
        else if (opt == 'b') base = atoi(optarg);
        else if (opt == 'd') seconds = atof(optarg);
        else return 2;
    }
    if (!strcmp(argv[1], "churn")) {
        if (seconds <= 0 || parallel < 1) {
            fprintf(stderr, "cref: -d and -P must be positive\n");
            return 2;
        }
        return churn(seconds, parallel, base);
    }
    if (total < 1 || parallel < 1) {
        fprintf(stderr, "cref: -n and -P must be positive\n");
        return 2;
    }
    return hold(total, parallel, hold_s, base);
}
