"""SCons build of the tinylls firmware for PlatformIO's local platform (firmware/platform).

The compilers come from PATH (Debian packages), selected by the board's `build.arch`:
arm -> arm-none-eabi-*, riscv -> riscv64-unknown-elf-* (+ picolibc). The sources are the env's
build_src_filter in platformio.ini (ccore/src/*.c, firmware/app/*.c, firmware/boards/<port>/*.c);
`pio test` builds the test suite instead of firmware/app (the suite provides tinylls_app_main).

Build settings (each: project option in platformio.ini, overridden by the environment variable;
`make -C firmware` sets the variables):
  custom_arena_bytes   TINYLLS_ARENA_BYTES   -DTL_FW_ARENA_BYTES (scratch arena, input staged inside)
  custom_blob_bytes    TINYLLS_BLOB_BYTES    -DTL_FW_BLOB_BYTES  (model RAM)
  custom_input_bytes   TINYLLS_INPUT_BYTES   -DTL_FW_INPUT_BYTES (unused by the app: kept for old scripts)
  custom_max_layers    TINYLLS_MAX_LAYERS    -DTL_FW_MAX_LAYERS
  custom_stack_bytes   TINYLLS_STACK_BYTES   the linker's stack reserve (default 32768)
  custom_model         TINYLLS_MODEL         a .tlm file compiled into flash: `python -m host.quantize
                                             export-c FILE --name fw` into $BUILD_DIR/model, and
                                             -DTL_FW_MODEL (sizes default to the model's own figures)
  custom_opt           TINYLLS_OPT           optimisation (default -O2)
                       TINYLLS_EXTRA_CFLAGS  appended to the C flags
                       TINYLLS_PYTHON        interpreter for export-c (default: PlatformIO's)
Every object gets -fstack-usage and -fcallgraph-info=su (.su/.ci beside the .o; bench/mcu.py reads
them). `pio run -t size` prints `size -A`; every build prints RAM (.data + .bss) and flash
(.text + .rodata + .data) against the board's upload.maximum_ram_size / maximum_size.
"""
import os
import shlex
import subprocess

from SCons.Script import Default, DefaultEnvironment

env = DefaultEnvironment()
board = env.BoardConfig()
arch = board.get("build.arch", "arm")
PREFIX = {"arm": "arm-none-eabi-", "riscv": "riscv64-unknown-elf-", "xtensa": "xtensa-lx106-elf-"}
if arch not in PREFIX:
    raise SystemExit("tinylls platform: board %s has unknown build.arch %r" % (env.subst("$BOARD"), arch))
cross = PREFIX[arch]


def setting(name, default=None):
    """TINYLLS_<NAME> from the environment, else the env's custom_<name>, else default."""
    value = os.environ.get("TINYLLS_" + name.upper())
    if value in (None, ""):
        value = env.GetProjectOption("custom_" + name, default)
    return value if value not in ("", None) else default


project_dir = env.subst("$PROJECT_DIR")
cpu_flags = shlex.split(board.get("build.cpu_flags", ""))
stack_bytes = int(setting("stack_bytes", 32768))

env.Replace(
    AR=cross + "gcc-ar",
    AS=cross + "gcc",
    CC=cross + "gcc",
    CXX=cross + "g++",
    GDB=cross + "gdb",
    OBJCOPY=cross + "objcopy",
    RANLIB=cross + "gcc-ranlib",
    SIZETOOL=cross + "size",
    ARFLAGS=["rc"],
    PROGNAME="firmware",
    PROGSUFFIX=".elf",
    # RAM = .data + .bss (+ .stack, the linker's reserve, where a board script places one);
    # flash = what the image occupies in ROM
    SIZECHECKCMD="$SIZETOOL -A -d $SOURCES",
    SIZEPROGREGEXP=r"^(?:\.vectors|\.text|\.rodata|\.data|\.ARM\.exidx|\.srodata|\.sdata)\s+(\d+).*",
    SIZEDATAREGEXP=r"^(?:\.data|\.sdata|\.bss|\.sbss)\s+(\d+).*",
    SIZEPRINTCMD="$SIZETOOL -A -d $SOURCES",
)
if not board.get("build.ldscript", ""):
    raise SystemExit("tinylls platform: board %s has no build.ldscript" % env.subst("$BOARD"))
env.Replace(LDSCRIPT_PATH=os.path.join(project_dir, board.get("build.ldscript")))

env.Append(
    ASFLAGS=cpu_flags + ["-x", "assembler-with-cpp"],
    CFLAGS=["-std=c99"],
    CCFLAGS=cpu_flags + [setting("opt", "-O2"), "-g", "-Wall", "-Wextra", "-Werror", "-ffunction-sections",
                         "-fdata-sections", "-fstack-usage", "-fcallgraph-info=su"]
            + shlex.split(board.get("build.libc_cflags", ""))
            + shlex.split(os.environ.get("TINYLLS_EXTRA_CFLAGS", "")),
    CPPPATH=[os.path.join(project_dir, "ccore", "include"), os.path.join(project_dir, "firmware", "app")],
    LINKFLAGS=cpu_flags + ["-nostartfiles", "-Wl,--gc-sections", "-Wl,--defsym=STACK_BYTES=%d" % stack_bytes,
                           "-Wl,-Map=%s" % os.path.join(env.subst("$BUILD_DIR"), "firmware.map")]
              + shlex.split(board.get("build.libc_flags", "")),
    LIBS=["c", "gcc"],
)

for name in ("arena_bytes", "blob_bytes", "input_bytes", "max_layers"):
    value = setting(name)
    if value is not None:
        env.Append(CPPDEFINES=[("TL_FW_" + name.upper(), int(value))])

model = setting("model")
if model:
    model = os.path.abspath(os.path.join(project_dir, model))
    if not os.path.isfile(model):
        raise SystemExit("tinylls platform: model %s: no such file" % model)
    model_dir = os.path.join(env.subst("$BUILD_DIR"), "model")
    python = os.environ.get("TINYLLS_PYTHON") or env.subst("$PYTHONEXE")

    def export_c(target, source, env):
        os.makedirs(model_dir, exist_ok=True)
        return subprocess.call([python, "-m", "host.quantize", "export-c", str(source[0]), "-o", model_dir,
                                "--name", "fw"], cwd=project_dir)

    generated = env.Command([os.path.join(model_dir, "fw_model.c"), os.path.join(model_dir, "fw_model.h")],
                            model, env.VerboseAction(export_c, "Exporting %s to C (host.quantize)" % model))
    env.Append(CPPDEFINES=["TL_FW_MODEL"], CPPPATH=[model_dir],
               PIOBUILDFILES=[env.Object(os.path.join(model_dir, "fw_model.o"), generated[0])])

if "test" in env.GetBuildType():
    # the suite under test/ provides tinylls_app_main; the board port still provides main()
    env.Append(SRC_FILTER=["-<firmware/app/>"])

elf = env.BuildProgram()
Default(elf)
# `pio run -t size`: the RAM / flash summary against the board's capacities, then every section
env.AddPlatformTarget("size", elf, [env.VerboseAction(env.CheckUploadSize, "Checking size $SOURCE"),
                                    env.VerboseAction("$SIZEPRINTCMD", "Calculating size $SOURCE")], "Program Size")

# `pio run -t upload` for real boards: a raw binary handed to the env's upload_command (e.g.
# disco_f746ng: st-flash from Debian's stlink-tools)
if env.GetProjectOption("upload_command", None):
    firmware_bin = env.Command(os.path.join("$BUILD_DIR", "${PROGNAME}.bin"), elf,
                               env.VerboseAction("$OBJCOPY -O binary $SOURCE $TARGET", "Building $TARGET"))
    env.AddPlatformTarget("upload", firmware_bin, env.VerboseAction("$UPLOADCMD", "Uploading $SOURCE"), "Upload")
