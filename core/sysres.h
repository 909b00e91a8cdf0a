/* sysres.h: what the process may use (cgroup v2/v1 memory and CPU limits, else the machine's memory and CPUs) and what it uses (RSS, CPU time). */
#ifndef SLUICE_SYSRES_H
#define SLUICE_SYSRES_H

/*
 * "Memory < 80 %" and "CPU < 70 %" only mean something against a limit. In a container or a
 * systemd unit with MemoryMax=/CPUQuota= the limit is the cgroup's: cgroup v2 memory.max and
 * cpu.max ("quota period"), the smallest along the path from the process's cgroup up to the
 * root of the mount (a parent's limit applies to its children). cgroup v1 (memory.limit_in_bytes,
 * cpu.cfs_quota_us / cpu.cfs_period_us) is read when there is no v2 hierarchy. When no cgroup
 * limits the process ("max", -1, or a v1 "unlimited" near 2^63), or the limit is above the
 * machine's, the machine's figures are used: MemTotal from /proc/meminfo and the number of CPUs
 * in the process's affinity mask (what `nproc` prints).
 */

typedef struct sysres_limits {
    double mem_bytes;        /* memory the process may use */
    double cpus;             /* CPUs' worth of time per second the process may use (may be fractional) */
    int mem_cgroup;          /* 1 when mem_bytes comes from a cgroup limit, 0 from the machine */
    int cpu_cgroup;          /* likewise for cpus */
} sysres_limits;

/* Reads the limits. proc_cgroup is /proc/self/cgroup, root the cgroup mount (/sys/fs/cgroup),
 * meminfo /proc/meminfo; NULL for each means those defaults (tests pass a fake tree). Always
 * fills out (a missing file falls back to the machine). */
void sysres_limits_read(const char *proc_cgroup, const char *root, const char *meminfo, sysres_limits *out);

/* The process's resident set size in bytes and CPU time (user + system) in seconds. */
void sysres_usage(double *rss_bytes, double *cpu_seconds);

#endif
