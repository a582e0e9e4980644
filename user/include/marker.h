/*
 * Markers for the guest instruction counter, from user programs (C, any libc, both kernels).
 *
 * The same encoding as the kernel's `arch::marker` (arch/src/marker.rs): the seven-byte NOP
 * `nopl disp32(%rax)`, bytes 0f 1f 80 and a little-endian displacement
 * 0x4d000000 | kind << 16 | tag, where kind is 'B' (open the window TAG on this CPU), 'E' (close
 * it) or 'I' (the next interrupt taken on this CPU opens it, up to its iretq). A NOP with a memory
 * operand touches no memory, so this runs unchanged on hardware and Linux.
 *
 *     MARKER_BEGIN(3);
 *     for (i = 0; i < n; i++) sched_yield();
 *     MARKER_END(3);
 *
 * TAG must be an integer constant from 0 to 65535.
 */
#ifndef MARKER_H
#define MARKER_H

#define MARKER_KIND_BEGIN 0x42 /* 'B' */
#define MARKER_KIND_END 0x45   /* 'E' */
#define MARKER_KIND_ARM 0x49   /* 'I' */

#define MARKER_DISPLACEMENT(kind, tag) (0x4d000000u | ((unsigned)(kind) << 16) | ((unsigned)(tag) & 0xffffu))

/* "memory": the compiler keeps the marker in order with the loads and stores around it. */
#define MARKER_EMIT(kind, tag) \
    __asm__ volatile(".byte 0x0f, 0x1f, 0x80\n\t.4byte %c0" : : "i"(MARKER_DISPLACEMENT(kind, tag)) : "memory")

#define MARKER_BEGIN(tag) MARKER_EMIT(MARKER_KIND_BEGIN, tag)
#define MARKER_END(tag) MARKER_EMIT(MARKER_KIND_END, tag)
#define MARKER_ARM(tag) MARKER_EMIT(MARKER_KIND_ARM, tag)

#endif
