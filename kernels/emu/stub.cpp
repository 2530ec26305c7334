// Placeholder until the emulator runtime lands: an empty kernel table.
#include <cstddef>
struct Entry { const char* module; const char* name; const char* signature; const void* invoke; };
extern "C" const Entry* solar_emu_kernels(size_t* n) { *n = 0; return nullptr; }
extern "C" int solar_emu_launch(const Entry*, const unsigned*, const unsigned*, size_t, void* const*, char** r) { *r = nullptr; return 1; }
extern "C" void solar_emu_free_report(char*) {}
extern "C" void* solar_emu_alloc(size_t b) { return ::operator new(b ? b : 1); }
extern "C" void solar_emu_free(void* p) { ::operator delete(p); }
extern "C" void solar_emu_set_checks(int) {}
