/* sysres.c: cgroup and machine limits, process usage; see sysres.h. */
#include "sysres.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define V1_UNLIMITED 4.0e18   /* v1 reports "no limit" as a page-rounded 2^63 - 1 */

/* The first line of a small file, without its newline; 0, or -1 when it cannot be read. */
static int read_line(const char *path, char *out, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char *r = fgets(out, (int)n, f);
    fclose(f);
    if (!r) return -1;
    out[strcspn(out, "\n")] = 0;
    return 0;
}

static int is_dir(const char *p)
{
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.", p);
    return access(probe, F_OK) == 0;
}

/* The path of the process's cgroup in the v2 hierarchy ("0::/x") or, for v1, in the hierarchy
 * whose controller list holds want ("4:memory:/x", "2:cpu,cpuacct:/x"). 0 when found. */
static int cgroup_path(const char *proc_cgroup, const char *want, char *out, size_t n)
{
    FILE *f = fopen(proc_cgroup, "r");
    if (!f) return -1;
    char line[4096];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c1 = *c2 = 0;
        const char *ctrls = c1 + 1, *path = c2 + 1;
        if (!want) {
            if (strcmp(line, "0") == 0 && !*ctrls) { snprintf(out, n, "%s", path); found = 0; break; }
            continue;
        }
        for (char *save = NULL, *tok = strtok_r((char *)ctrls, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
            if (strcmp(tok, want) == 0) { snprintf(out, n, "%s", path); found = 0; }
        if (found == 0) break;
    }
    fclose(f);
    return found;
}

/* Walks dir = base + rel up to base (inclusive), calling read_limit on each level; keeps the
 * smallest limit found (> 0). When base + rel does not exist (a cgroup namespace shows the
 * container's cgroup as the mount's root), only base is read. */
static double smallest_up(const char *base, const char *rel, double (*read_limit)(const char *dir))
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s%s", base, strcmp(rel, "/") == 0 ? "" : rel);
    if (!is_dir(dir)) snprintf(dir, sizeof dir, "%s", base);
    size_t blen = strlen(base);
    double best = 0;
    for (;;) {
        double v = read_limit(dir);
        if (v > 0 && (best == 0 || v < best)) best = v;
        if (strlen(dir) <= blen) break;
        char *sl = strrchr(dir, '/');
        if (!sl || (size_t)(sl - dir) < blen) break;
        *sl = 0;
    }
    return best;
}

static double v2_mem(const char *dir)
{
    char p[4200], l[128];
    snprintf(p, sizeof p, "%s/memory.max", dir);
    if (read_line(p, l, sizeof l) || strcmp(l, "max") == 0) return 0;
    return strtod(l, NULL);
}

static double v2_cpu(const char *dir)
{
    char p[4200], l[128];
    snprintf(p, sizeof p, "%s/cpu.max", dir);
    if (read_line(p, l, sizeof l) || strncmp(l, "max", 3) == 0) return 0;
    double quota = 0, period = 100000;
    if (sscanf(l, "%lf %lf", &quota, &period) < 1 || quota <= 0 || period <= 0) return 0;
    return quota / period;
}

static double v1_mem(const char *dir)
{
    char p[4200], l[128];
    snprintf(p, sizeof p, "%s/memory.limit_in_bytes", dir);
    if (read_line(p, l, sizeof l)) return 0;
    double v = strtod(l, NULL);
    return v >= V1_UNLIMITED ? 0 : v;
}

static double v1_cpu(const char *dir)
{
    char p[4200], l[128];
    snprintf(p, sizeof p, "%s/cpu.cfs_quota_us", dir);
    if (read_line(p, l, sizeof l)) return 0;
    double quota = strtod(l, NULL);
    snprintf(p, sizeof p, "%s/cpu.cfs_period_us", dir);
    if (quota <= 0 || read_line(p, l, sizeof l)) return 0;
    double period = strtod(l, NULL);
    return period > 0 ? quota / period : 0;
}

static double machine_mem(const char *meminfo)
{
    FILE *f = fopen(meminfo, "r");
    double kb = 0;
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemTotal: %lf kB", &kb) == 1) break;
        fclose(f);
    }
    if (kb > 0) return kb * 1024.0;
    long pages = sysconf(_SC_PHYS_PAGES), ps = sysconf(_SC_PAGESIZE);
    return pages > 0 && ps > 0 ? (double)pages * (double)ps : 0;
}

static double machine_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (double)n : 1;
}

void sysres_limits_read(const char *proc_cgroup, const char *root, const char *meminfo, sysres_limits *out)
{
    if (!proc_cgroup) proc_cgroup = "/proc/self/cgroup";
    if (!root) root = "/sys/fs/cgroup";
    if (!meminfo) meminfo = "/proc/meminfo";
    double mem = 0, cpu = 0;
    char rel[4096], base[4200], probe[4300];
    snprintf(probe, sizeof probe, "%s/cgroup.controllers", root);
    if (cgroup_path(proc_cgroup, NULL, rel, sizeof rel) == 0 && access(probe, F_OK) == 0) {
        mem = smallest_up(root, rel, v2_mem);
        cpu = smallest_up(root, rel, v2_cpu);
    } else {
        snprintf(base, sizeof base, "%s/memory", root);
        if (cgroup_path(proc_cgroup, "memory", rel, sizeof rel) == 0 && is_dir(base)) mem = smallest_up(base, rel, v1_mem);
        snprintf(base, sizeof base, "%s/cpu", root);
        if (cgroup_path(proc_cgroup, "cpu", rel, sizeof rel) == 0 && is_dir(base)) cpu = smallest_up(base, rel, v1_cpu);
    }
    double mm = machine_mem(meminfo), mc = machine_cpus();
    out->mem_cgroup = mem > 0 && (mm <= 0 || mem < mm);
    out->mem_bytes = out->mem_cgroup ? mem : mm;
    out->cpu_cgroup = cpu > 0 && cpu < mc;
    out->cpus = out->cpu_cgroup ? cpu : mc;
}

void sysres_usage(double *rss_bytes, double *cpu_seconds)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *cpu_seconds = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                   ru.ru_stime.tv_usec / 1e6;
    *rss_bytes = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        long pages, res;
        if (fscanf(f, "%ld %ld", &pages, &res) == 2) *rss_bytes = (double)res * (double)sysconf(_SC_PAGESIZE);
        fclose(f);
    }
}
