/* test_sysres.c: unit tests for core/sysres (cgroup v2 and v1 limits from fake trees, machine fallback). */
#include "sysres.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[256];

static void put(const char *rel, const char *text)
{
    char p[512], d[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    snprintf(d, sizeof d, "%s", p);
    for (char *s = d + strlen(root) + 1; (s = strchr(s, '/')); s++) { *s = 0; mkdir(d, 0755); *s = '/'; }
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
}

static void path(char *out, size_t n, const char *rel) { snprintf(out, n, "%s/%s", root, rel); }

int main(void)
{
    snprintf(root, sizeof root, "/tmp/sluice-sysres-%d", (int)getpid());
    mkdir(root, 0755);
    char pc[512], cg[512], mi[512];
    put("meminfo", "MemTotal:       8000000 kB\nMemFree:  1 kB\n");
    path(mi, sizeof mi, "meminfo");

    /* cgroup v2: the process in /app/web, a memory limit on /app (the parent) and a smaller
     * CPU quota on /app/web itself */
    put("v2/proc", "0::/app/web\n");
    put("v2/fs/cgroup.controllers", "cpu memory\n");
    put("v2/fs/memory.max", "max\n");
    put("v2/fs/app/memory.max", "1073741824\n");
    put("v2/fs/app/cpu.max", "max 100000\n");
    put("v2/fs/app/web/memory.max", "max\n");
    put("v2/fs/app/web/cpu.max", "150000 100000\n");
    path(pc, sizeof pc, "v2/proc");
    path(cg, sizeof cg, "v2/fs");
    sysres_limits l;
    sysres_limits_read(pc, cg, mi, &l);
    ok(l.mem_cgroup && l.mem_bytes == 1073741824.0, "v2: a parent's memory.max applies (%.0f)", l.mem_bytes);
    /* the machine may have one CPU: a 1.5-CPU quota only counts when below what we may run on */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu >= 2) ok(l.cpu_cgroup && l.cpus == 1.5, "v2: cpu.max 150000/100000 = 1.5 CPUs (%.2f)", l.cpus);
    else ok(!l.cpu_cgroup, "v2: a quota above the machine's CPUs is the machine's");

    /* v2, unlimited everywhere: the machine's figures */
    put("v2u/proc", "0::/\n");
    put("v2u/fs/cgroup.controllers", "cpu memory\n");
    put("v2u/fs/memory.max", "max\n");
    put("v2u/fs/cpu.max", "max 100000\n");
    path(pc, sizeof pc, "v2u/proc");
    path(cg, sizeof cg, "v2u/fs");
    sysres_limits_read(pc, cg, mi, &l);
    ok(!l.mem_cgroup && l.mem_bytes == 8000000.0 * 1024, "v2 unlimited: MemTotal (%.0f)", l.mem_bytes);
    ok(!l.cpu_cgroup && l.cpus >= 1, "v2 unlimited: the CPUs we may run on (%.0f)", l.cpus);

    /* a memory.max above the machine's memory is no limit */
    put("v2u/fs/memory.max", "99999999999999\n");
    sysres_limits_read(pc, cg, mi, &l);
    ok(!l.mem_cgroup && l.mem_bytes == 8000000.0 * 1024, "v2: a limit above MemTotal is the machine's");

    /* a cgroup namespace: /proc/self/cgroup names a path the mount does not have; the mount's root is ours */
    put("ns/proc", "0::/../../some/where\n");
    put("ns/fs/cgroup.controllers", "memory\n");
    put("ns/fs/memory.max", "536870912\n");
    path(pc, sizeof pc, "ns/proc");
    path(cg, sizeof cg, "ns/fs");
    sysres_limits_read(pc, cg, mi, &l);
    ok(l.mem_cgroup && l.mem_bytes == 536870912.0, "namespace: the mount root's memory.max");

    /* cgroup v1 (no cgroup.controllers at the root) */
    put("v1/proc", "12:pids:/\n4:memory:/box\n3:cpu,cpuacct:/box\n0::/\n");
    put("v1/fs/memory/box/memory.limit_in_bytes", "268435456\n");
    put("v1/fs/memory/memory.limit_in_bytes", "9223372036854771712\n");
    put("v1/fs/cpu/box/cpu.cfs_quota_us", "50000\n");
    put("v1/fs/cpu/box/cpu.cfs_period_us", "100000\n");
    put("v1/fs/cpu/cpu.cfs_quota_us", "-1\n");
    put("v1/fs/cpu/cpu.cfs_period_us", "100000\n");
    path(pc, sizeof pc, "v1/proc");
    path(cg, sizeof cg, "v1/fs");
    sysres_limits_read(pc, cg, mi, &l);
    ok(l.mem_cgroup && l.mem_bytes == 268435456.0, "v1: memory.limit_in_bytes (%.0f)", l.mem_bytes);
    ok(l.cpu_cgroup && l.cpus == 0.5, "v1: cfs quota/period = 0.5 CPU (%.2f)", l.cpus);

    /* nothing readable at all: still sane figures */
    sysres_limits_read("/nonexistent/cgroup", "/nonexistent", "/nonexistent/meminfo", &l);
    ok(!l.mem_cgroup && !l.cpu_cgroup && l.mem_bytes > 0 && l.cpus >= 1, "no files: the machine's figures from sysconf");

    double rss, cpu;
    sysres_usage(&rss, &cpu);
    ok(rss > 100000 && cpu >= 0, "usage: RSS %.0f bytes, CPU %.3f s", rss, cpu);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd)) printf("# could not remove %s\n", root);
    return tap_done();
}
