/* Shared configuration of the fake NVIDIA libraries the hardware tests compile.
 *
 * Each fake reads its GPUs from the environment at call time, so a test changes what the
 * "hardware" reports without recompiling:
 *   FAKEGPU_COUNT            number of physical GPUs (default 2)
 *   FAKEGPU_<i>_TOTAL_MIB    total memory of GPU i (default 8192)
 *   FAKEGPU_<i>_FREE_MIB     free memory of GPU i (default 7168)
 *   FAKEGPU_<i>_CC           compute capability "major.minor" (default 8.6)
 *   FAKEGPU_<i>_NAME         device name (default "Fake GPU <i>")
 *   FAKEGPU_FAIL_INIT        "1": every fake's init call fails
 *   FAKEGPU_FAIL_<LIB>       "1": only this fake's init fails (NVML, CUDA or CUDART)
 *   FAKEGPU_DRIVER           driver version as CUDA encodes it (default 12040)
 *   FAKEGPU_CALLS            a file each fake appends the name of every call to
 * UUIDs are GPU-00000000-0000-0000-0000-0000000000<i>. The CUDA driver and runtime fakes
 * honour CUDA_VISIBLE_DEVICES (indices or UUID prefixes) as the real ones do; NVML does not.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static __attribute__((unused)) void fake_log_call(const char *name) {
  const char *path = getenv("FAKEGPU_CALLS");
  if (!path) return;
  FILE *f = fopen(path, "a");
  if (!f) return;
  fprintf(f, "%s\n", name);
  fclose(f);
}

static __attribute__((unused)) long fake_env_long(int index, const char *key, long fallback) {
  char name[64];
  if (index >= 0) snprintf(name, sizeof name, "FAKEGPU_%d_%s", index, key);
  else snprintf(name, sizeof name, "FAKEGPU_%s", key);
  const char *v = getenv(name);
  return v && *v ? strtol(v, NULL, 10) : fallback;
}

static __attribute__((unused)) int fake_physical_count(void) { return (int)fake_env_long(-1, "COUNT", 2); }

static __attribute__((unused)) int fake_fail_init(const char *which) {
  char name[64];
  snprintf(name, sizeof name, "FAIL_%s", which);
  return fake_env_long(-1, "FAIL_INIT", 0) != 0 || fake_env_long(-1, name, 0) != 0;
}

static __attribute__((unused)) unsigned long long fake_total(int i) {
  return (unsigned long long)fake_env_long(i, "TOTAL_MIB", 8192) << 20;
}

static __attribute__((unused)) unsigned long long fake_free(int i) {
  return (unsigned long long)fake_env_long(i, "FREE_MIB", 7168) << 20;
}

static __attribute__((unused)) void fake_cc(int i, int *major, int *minor) {
  char name[64];
  snprintf(name, sizeof name, "FAKEGPU_%d_CC", i);
  const char *v = getenv(name);
  *major = 8;
  *minor = 6;
  if (v && *v) sscanf(v, "%d.%d", major, minor);
}

static __attribute__((unused)) void fake_name(int i, char *out, int len) {
  char name[64];
  snprintf(name, sizeof name, "FAKEGPU_%d_NAME", i);
  const char *v = getenv(name);
  if (v && *v) snprintf(out, (size_t)len, "%s", v);
  else snprintf(out, (size_t)len, "Fake GPU %d", i);
}

static __attribute__((unused)) void fake_uuid_bytes(int i, unsigned char out[16]) {
  memset(out, 0, 16);
  out[15] = (unsigned char)i;
}

static __attribute__((unused)) void fake_uuid_text(int i, char *out, int len) {
  snprintf(out, (size_t)len, "GPU-00000000-0000-0000-0000-0000000000%02x", i);
}

/* Physical indices visible through CUDA_VISIBLE_DEVICES, in its order; returns the count.
 * As the real driver: the list stops at the first entry that matches no device. */
static __attribute__((unused)) int fake_visible(int *out, int cap) {
  int physical = fake_physical_count();
  const char *v = getenv("CUDA_VISIBLE_DEVICES");
  if (!v) {
    int n = physical < cap ? physical : cap;
    for (int i = 0; i < n; i++) out[i] = i;
    return n;
  }
  char buf[512];
  snprintf(buf, sizeof buf, "%s", v);
  int n = 0;
  for (char *tok = strtok(buf, ","); tok && n < cap; tok = strtok(NULL, ",")) {
    while (*tok == ' ') tok++;
    int found = -1;
    if (strncmp(tok, "GPU-", 4) == 0) {
      for (int i = 0; i < physical; i++) {
        char uuid[64];
        fake_uuid_text(i, uuid, sizeof uuid);
        if (strncmp(uuid, tok, strlen(tok)) == 0) found = i;
      }
    } else {
      char *end;
      long idx = strtol(tok, &end, 10);
      if (end != tok && idx >= 0 && idx < physical) found = (int)idx;
    }
    if (found < 0) break;
    out[n++] = found;
  }
  return n;
}
