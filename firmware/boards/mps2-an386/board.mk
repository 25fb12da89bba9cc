# MPS2 AN386: Cortex-M4 with single-precision FPU, run by qemu-system-arm -M mps2-an386.
CPUFLAGS := -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16
LDSCRIPT := boards/mps2-an386/link.ld
