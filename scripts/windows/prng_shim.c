/* Test-environment shim for Wine 8 only (real Windows ships bcryptprimitives.dll).
 * Rust's std (>= 1.78) imports ProcessPrng from bcryptprimitives.dll, which Wine 8.0 lacks, so every Rust program
 * would die at load. This DLL exports ProcessPrng and fills the buffer from RtlGenRandom (advapi32
 * SystemFunction036), the generator Windows itself documents for this purpose. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
  while (length > 0) {
    ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
    if (!SystemFunction036(data, chunk)) return FALSE;
    data += chunk;
    length -= chunk;
  }
  return TRUE;
}
