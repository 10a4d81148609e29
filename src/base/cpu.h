/* cpu.h -- a portable spin-wait hint for short busy-waits (never for waits that can be long). */
#ifndef AYDER_BASE_CPU_H
#define AYDER_BASE_CPU_H

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
