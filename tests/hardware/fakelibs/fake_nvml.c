/* A fake libnvidia-ml: the NVML symbols corral's discovery calls. */
#include "fakegpu.h"

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef void *nvmlDevice_t;
static int initialised = 0;

int nvmlInit_v2(void) {
  fake_log_call("nvmlInit_v2");
  if (fake_fail_init("NVML")) return 9; /* NVML_ERROR_DRIVER_NOT_LOADED */
  initialised = 1;
  return 0;
}
int nvmlShutdown(void) { fake_log_call("nvmlShutdown"); initialised = 0; return 0; }
int nvmlDeviceGetCount_v2(unsigned int *count) {
  fake_log_call("nvmlDeviceGetCount_v2");
  if (!initialised) return 1;
  *count = (unsigned int)fake_physical_count();
  return 0;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
  fake_log_call("nvmlDeviceGetHandleByIndex_v2");
  if (!initialised || (int)index >= fake_physical_count()) return 2;
  *device = (nvmlDevice_t)(unsigned long)(index + 1);
  return 0;
}
static int idx(nvmlDevice_t d) { return (int)(unsigned long)d - 1; }
int nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
  fake_log_call("nvmlDeviceGetMemoryInfo");
  int i = idx(device);
  memory->total = fake_total(i);
  memory->free = fake_free(i);
  memory->used = memory->total - memory->free;
  return 0;
}
int nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
  fake_name(idx(device), name, (int)length);
  return 0;
}
int nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
  fake_uuid_text(idx(device), uuid, (int)length);
  return 0;
}
int nvmlSystemGetDriverVersion(char *version, unsigned int length) {
  long v = fake_env_long(-1, "DRIVER", 12040);
  snprintf(version, length, "550.%ld.01", v % 100);
  return 0;
}
int nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor) {
  fake_cc(idx(device), major, minor);
  return 0;
}
