/* A fake libcuda (the CUDA driver API) with the symbols corral's discovery calls.
 * Build with -DOMIT_MEMINFO to leave cuMemGetInfo_v2 out (a library missing a symbol). */
#include "fakegpu.h"

typedef int CUdevice;
typedef void *CUcontext;
typedef struct { unsigned char bytes[16]; } CUuuid;
static int initialised = 0;
static int visible[64];
static int n_visible = 0;
static int current = -1;

int cuInit(unsigned int flags) {
  (void)flags;
  fake_log_call("cuInit");
  if (fake_fail_init("CUDA")) return 35; /* CUDA_ERROR_INSUFFICIENT_DRIVER */
  n_visible = fake_visible(visible, 64);
  initialised = 1;
  return 0;
}
int cuDriverGetVersion(int *version) {
  *version = (int)fake_env_long(-1, "DRIVER", 12040);
  return 0;
}
int cuDeviceGetCount(int *count) {
  fake_log_call("cuDeviceGetCount");
  if (!initialised) return 3; /* CUDA_ERROR_NOT_INITIALIZED */
  *count = n_visible;
  return 0;
}
int cuDeviceGet(CUdevice *device, int ordinal) {
  if (!initialised || ordinal < 0 || ordinal >= n_visible) return 101; /* INVALID_DEVICE */
  *device = ordinal;
  return 0;
}
int cuDeviceGetAttribute(int *value, int attribute, CUdevice device) {
  int major, minor;
  fake_cc(visible[device], &major, &minor);
  if (attribute == 75) *value = major;
  else if (attribute == 76) *value = minor;
  else return 1;
  return 0;
}
int cuDeviceGetName(char *name, int length, CUdevice device) {
  fake_name(visible[device], name, length);
  return 0;
}
int cuDeviceGetUuid(CUuuid *uuid, CUdevice device) {
  fake_uuid_bytes(visible[device], uuid->bytes);
  return 0;
}
int cuCtxCreate_v3(CUcontext *ctx, void *params, int n, unsigned int flags, CUdevice device) {
  (void)params; (void)n; (void)flags;
  fake_log_call("cuCtxCreate_v3");
  current = device;
  *ctx = (CUcontext)(unsigned long)(device + 1);
  return 0;
}
#ifndef OMIT_MEMINFO
int cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes) {
  fake_log_call("cuMemGetInfo_v2");
  if (current < 0) return 201; /* CUDA_ERROR_INVALID_CONTEXT */
  *free_bytes = (size_t)fake_free(visible[current]);
  *total_bytes = (size_t)fake_total(visible[current]);
  return 0;
}
#endif
int cuCtxDestroy(CUcontext ctx) {
  (void)ctx;
  current = -1;
  return 0;
}
