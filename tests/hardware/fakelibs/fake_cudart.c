/* A fake libcudart (the CUDA runtime API) with the symbols corral's discovery calls.
 * cudaGetDeviceProperties fills the leading fields of CUDA 12's cudaDeviceProp (name[256],
 * uuid[16], ..., totalGlobalMem at byte 288, major/minor at 360/364) in a 4 KiB buffer. */
#include "fakegpu.h"

static int current = 0;

int cudaGetDeviceCount(int *count) {
  fake_log_call("cudaGetDeviceCount");
  if (fake_fail_init("CUDART")) return 35; /* cudaErrorInsufficientDriver */
  int visible[64];
  *count = fake_visible(visible, 64);
  return 0;
}
int cudaSetDevice(int device) {
  int visible[64];
  int n = fake_visible(visible, 64);
  if (device < 0 || device >= n) return 101; /* cudaErrorInvalidDevice */
  current = visible[device];
  return 0;
}
int cudaDeviceReset(void) { return 0; }
int cudaDeviceSynchronize(void) { return 0; }
int cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
  fake_log_call("cudaMemGetInfo");
  *free_bytes = (size_t)fake_free(current);
  *total_bytes = (size_t)fake_total(current);
  return 0;
}
int cudaDriverGetVersion(int *version) {
  *version = (int)fake_env_long(-1, "DRIVER", 12040);
  return 0;
}
int cudaGetDeviceProperties(void *prop, int device) {
  int visible[64];
  int n = fake_visible(visible, 64);
  if (device < 0 || device >= n) return 101;
  int i = visible[device];
  unsigned char *p = (unsigned char *)prop;
  fake_name(i, (char *)p, 256);
  fake_uuid_bytes(i, p + 256);
  size_t total = (size_t)fake_total(i);
  memcpy(p + 288, &total, sizeof total);
  int major, minor;
  fake_cc(i, &major, &minor);
  memcpy(p + 360, &major, sizeof major);
  memcpy(p + 364, &minor, sizeof minor);
  return 0;
}
int cudaDeviceGetAttribute(int *value, int attribute, int device) {
  int visible[64];
  int n = fake_visible(visible, 64);
  if (device < 0 || device >= n) return 101;
  int major, minor;
  fake_cc(visible[device], &major, &minor);
  if (attribute == 75) *value = major;
  else if (attribute == 76) *value = minor;
  else return 1;
  return 0;
}
