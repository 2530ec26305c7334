// registry.h: what build.rs appends to each kernel module compiled for the emulator: an entry per
// `extern "C"` kernel with its parameter types as text (the typed launch boundary compares them
// with the engine's declarations) and a thunk that calls it with arguments passed the way
// cuLaunchKernel takes them (an array of pointers to each value).
#pragma once
#include <string>
#include <type_traits>
#include <utility>

struct EmuEntry {
    const char* module;
    const char* name;
    const char* signature;
    void (*invoke)(void* const* args);
};

template <class T> struct EmuTypeName { static const char* get() { return "?"; } };
template <> struct EmuTypeName<float> { static const char* get() { return "f32"; } };
template <> struct EmuTypeName<__nv_bfloat16> { static const char* get() { return "bf16"; } };
template <> struct EmuTypeName<int> { static const char* get() { return "i32"; } };
template <> struct EmuTypeName<unsigned> { static const char* get() { return "u32"; } };
template <> struct EmuTypeName<long> { static const char* get() { return "i64"; } };
template <> struct EmuTypeName<unsigned long> { static const char* get() { return "u64"; } };
template <> struct EmuTypeName<long long> { static const char* get() { return "i64"; } };
template <> struct EmuTypeName<unsigned long long> { static const char* get() { return "u64"; } };
template <> struct EmuTypeName<unsigned char> { static const char* get() { return "u8"; } };

template <class T> struct EmuParam { static std::string get() { return EmuTypeName<T>::get(); } };
template <class T> struct EmuParam<T*> { static std::string get() { return std::string("*mut ") + EmuTypeName<T>::get(); } };
template <class T> struct EmuParam<const T*> {
    static std::string get() { return std::string("*const ") + EmuTypeName<T>::get(); }
};

template <class... A>
std::string emu_signature(void (*)(A...)) {
    std::string s;
    ((s += (s.empty() ? "" : ", ") + EmuParam<A>::get()), ...);
    return s;
}

// Reading the argument array is the launcher's business, not the kernel's: not instrumented,
// and noipa so no interprocedural pass moves those loads into an instrumented caller.
template <class... A, std::size_t... I>
__attribute__((no_sanitize_thread, noipa)) void emu_call(void (*f)(A...), void* const* args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}
template <class... A>
void emu_invoke(void (*f)(A...), void* const* args) {
    emu_call(f, args, std::index_sequence_for<A...>());
}
