# The front door: build, boot and test the kernel.
#
#   make run     build the kernel and boot it in QEMU, serial console on this terminal
#   make test    every test: host unit tests, loom models, bench smoke run, in-kernel tests in QEMU
#   make trace   boot with the scheduling trace on; target/trace/trace.json, timeline.svg, summary.txt
#   make help    all targets
#
# Options (on the command line, e.g. `make run SMP=8 ARGS="exit-after=10 loglevel=debug"`):
#
# CPUs for run and debug.
SMP ?= 4
# auto, kvm or tcg. auto takes KVM only where /dev/kvm opens AND /proc/cpuinfo shows vmx or svm:
# a /dev/kvm without them is a nested paravirtual KVM, slower than TCG.
ACCEL ?= auto
# auto, limine or pvh. auto takes Limine when LIMINE_DIR holds its files, else QEMU's direct
# (PVH) boot of the same ELF.
BOOT ?= auto
# bios or uefi (OVMF, from Debian's ovmf package; boots the Limine ISO).
FIRMWARE ?= bios
# The kernel command line (the ISO's limine.conf gets it too).
ARGS ?=
# Limine 8 binaries: limine-bios.sys, limine-bios-cd.bin, limine-uefi-cd.bin, BOOTX64.EFI (and,
# for BIOS boot from a disk, Limine's `limine` tool built there by `make -C`). `make limine` fetches them.
LIMINE_DIR ?= limine
# More QEMU arguments, appended.
QEMU_ARGS ?=
# Guest memory; empty: 512M, 1G above 4 CPUs.
MEM ?=
# Non-empty: build with the release profile.
RELEASE ?=
# QEMU -cpu model; empty: host under KVM, QEMU's default under TCG.
CPU ?=
# Part 2 of `make bench` (the in-kernel rows, with the guest instruction counter under TCG):
# system (the QEMU in PATH) or qemu10 (QEMU 10 from bookworm-backports, unpacked by `make qemu10`).
# BENCH_ICOUNT, with qemu10: QEMU's -icount options (e.g. shift=auto,sleep=off: guest time follows
# the instruction count). Empty by default: -icount puts every vCPU on one thread, where QEMU 10
# reports the wrong vCPU to plugins, so the counter stays off with it.
BENCH_QEMU ?= system
BENCH_ICOUNT ?=
# Seconds for make trace (default 2) and make soak (default 600); empty: each target's default.
SECONDS ?=
# make trace: the trace categories (`trace=` of the kernel).
TRACE ?= all
# The two-guest part (`make bench-linux`, also run by `make bench` and, tiny, by `make test`): the
# same static programs (user/bench/) on Debian's Linux kernel and on ours, under the same QEMU (TCG,
# the instruction counter loaded), -smp, memory and CPU model. GUESTS_CPU: QEMU's -cpu (max without
# 5-level paging, so both kernels page with four levels; QEMU 7.2's TCG offers XSAVE, SMEP and SMAP
# but no PCID, so neither kernel tags its TLB there).
GUESTS_CPU ?= max,-la57
GUESTS_SMP ?= 2
GUESTS_MEM ?= 1G
# CPU counts the QEMU harness of `make test` boots, and the seconds each boot may take: one boot
# runs every in-kernel test, user programs with forks included, which takes 80 s at -smp 2 on this
# loaded 2-core machine, so the deadline leaves room for -smp 8 there.
KTEST_SMP ?= 1,2,4,8
KTEST_TIMEOUT ?= 300
# More harness options, e.g. --filter NAME, --verbose, --cpu MODEL (see: cargo run -p ktest -- --help).
KTEST_ARGS ?=
# The C compiler of the user programs: Debian's musl-gcc (package musl-tools), static binaries.
USER_CC ?= musl-gcc
# More options for `user-oracle run`, e.g. --only NAME, --cpus 0-1 (see: cargo run -p user-oracle -- --help).
ORACLE_ARGS ?=
# `make user-kernel`: the QEMU CPU model (max: AVX for the avx program under TCG) and more
# options, e.g. --only NAME, --timeout SECONDS.
USER_KERNEL_CPU ?= max
USER_KERNEL_ARGS ?=
# Seconds each user-program boot may take: storm and memtorture at -smp 8 under TCG on a loaded
# 2-core machine need minutes, and a deadline must hold there, not only on an idle one.
USER_KERNEL_TIMEOUT ?= 900
# CPU counts `make user-kernel` boots each program at. USER_KERNEL_ARGS=--one-boot boots once per
# CPU count instead, the kernel's init-list= running every program of /etc/run-list in turn; `make
# test` does that at -smp 1, 2, 4 and 8.
USER_KERNEL_SMP ?= $(KTEST_SMP)
# The KVM functional run of `make test`, wherever /dev/kvm opens (even a nested KVM, whose emulated
# ring 0 is slow): the host CPU model brings x2APIC and the TSC-deadline timer, which no TCG offers.
# `-arch-capabilities`: QEMU aborts setting that MSR under some nested KVMs; `noxsave` and `nosmap` (kernel):
# such a KVM cannot emulate XGETBV/XSETBV in a guest whose ring 0 it emulates, so FPU threads use FXSAVE.
KVM_CPU ?= host,-arch-capabilities
KVM_TESTS ?= cpus_online percpu_own_id timer_calibrated sched_sleep_accuracy sched_remote_wake_ipi

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

QEMU := qemu-system-x86_64
TARGET := x86_64-unknown-none
TOOLCHAIN := $(shell sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
PROFILE := $(if $(RELEASE),release,debug)
PROFILE_FLAG := $(if $(RELEASE),--release)
# The kernel's rustflags live in .cargo/config.toml for its target; a RUSTFLAGS variable in the
# environment would replace them, so kernel builds run without it.
CARGO_KERNEL := env -u RUSTFLAGS cargo build -p kernel --target $(TARGET) $(PROFILE_FLAG)
KERNEL_ELF := target/$(TARGET)/$(PROFILE)/kernel
# The test kernel has its own target folder, so `make run` and `make test` never rebuild each other.
TEST_TARGET_DIR := target/ktest
TEST_ELF := target/kernel-test.elf
ISO := target/kernel.iso
# The initramfs: /init and /bin/* for the kernel's first user programs (cpio newc, written by
# user-oracle from user/programs.toml). Defined here, before the rules that list it as a prerequisite.
INITRAMFS := target/initramfs.cpio
# The in-kernel tests' own small initramfs (user/smoke), beside the user programs' one ($(INITRAMFS)).
SMOKE_INITRAMFS := target/smoke-initramfs.cpio
SMOKE_ROOT := target/smoke-initramfs-root
SMOKE_SRC := user/smoke/init.c user/smoke/fault.c user/smoke/threads.c user/smoke/fpu.c user/smoke/fuzz.c \
  user/src/wait.c user/src/churn.c user/src/forkcow.c user/src/execmt.c user/src/shmem.c user/src/fuzz.c user/include/ut.h
ISO_ROOT := target/iso_root
LIMINE_BRANCH := v8.2.0-binary
LIMINE_REPO := https://github.com/limine-bootloader/limine.git
LIMINE_FILES := limine-bios.sys limine-bios-cd.bin limine-uefi-cd.bin BOOTX64.EFI
LOOM_TESTS := $(wildcard sched/tests/loom*.rs smp/tests/loom*.rs trace/tests/loom*.rs kcore/tests/loom*.rs)
# Recursive (=), not :=: `make deps` may install OVMF during this very run, and the firmware must be
# looked for after that, not when the Makefile is read.
OVMF_CODE = $(firstword $(wildcard /usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/OVMF/OVMF_CODE.fd))
OVMF_VARS_TEMPLATE = $(subst OVMF_CODE,OVMF_VARS,$(OVMF_CODE))
OVMF_VARS := target/ovmf-vars.fd

# ---- choices made from the options (recursive: probed only by the targets that use them) --------

KVM_OPENS = $(shell (exec 3<>/dev/kvm) 2>/dev/null && echo yes)
CPU_VIRT = $(shell grep -qwE 'vmx|svm' /proc/cpuinfo 2>/dev/null && echo yes)
ifeq ($(ACCEL),auto)
ACCEL_USED = $(if $(and $(KVM_OPENS),$(CPU_VIRT)),kvm,tcg)
ACCEL_WHY = ACCEL=auto: $(if $(KVM_OPENS),$(if $(CPU_VIRT),/dev/kvm opens and the CPU has vmx/svm,/dev/kvm opens but /proc/cpuinfo shows no vmx/svm (nested KVM is slower than TCG)),/dev/kvm does not open)
else
ACCEL_USED = $(ACCEL)
ACCEL_WHY = ACCEL=$(ACCEL)
endif

# Limine's own host tool (`limine bios-install`), built in its folder by Limine's Makefile
# (`make -C LIMINE_DIR`); this Makefile never compiles Limine's code. Without it the ISO still
# boots (BIOS from CD, UEFI) and the disk image boots under UEFI only.
LIMINE_TOOL = $(wildcard $(LIMINE_DIR)/limine)
# Every one of the files, not some: `and` would take the spaces `foreach` leaves between empty
# results for a found file.
LIMINE_READY = $(if $(filter $(words $(LIMINE_FILES)),$(words $(wildcard $(addprefix $(LIMINE_DIR)/,$(LIMINE_FILES))))),yes)
LIMINE_NO_TOOL = echo "$(1): no $(LIMINE_DIR)/limine, so no BIOS stages written: $(2). make -C $(LIMINE_DIR) builds Limine's tool" >&2
ifeq ($(BOOT),auto)
BOOT_USED = $(if $(LIMINE_READY),limine,pvh)
BOOT_WHY = BOOT=auto: $(if $(LIMINE_READY),$(LIMINE_DIR)/ holds the Limine files,no Limine files in $(LIMINE_DIR)/ (make limine fetches them))
else
BOOT_USED = $(BOOT)
BOOT_WHY = BOOT=$(BOOT)
endif

# Below this the kernel cannot hold its image, boot arena and per-CPU stacks.
MIN_MEM_MIB := 16
MEM_USED = $(or $(MEM),$(if $(filter-out 1 2 3 4,$(SMP)),1G,512M))
CPU_USED = $(or $(CPU),$(if $(filter kvm,$(ACCEL_USED)),$(KVM_CPU)))
QEMU_COMMON = -machine q35 -accel $(ACCEL_USED) $(if $(CPU_USED),-cpu $(CPU_USED)) -smp $(SMP) -m $(MEM_USED) \
	-serial mon:stdio -display none -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04
comma := ,
OVMF_DRIVES = -drive if=pflash,format=raw,unit=0,readonly=on,file=$(OVMF_CODE) -drive if=pflash,format=raw,unit=1,file=$(OVMF_VARS)
QEMU_FIRMWARE = $(if $(filter uefi,$(FIRMWARE)),$(OVMF_DRIVES))
# ARGS reaches the shell through the environment, never spliced into a quoted word, so quotes and
# other shell characters in it arrive as they were typed.
# A nested KVM (/dev/kvm opens, the CPU shows no vmx/svm) emulates the guest's ring 0 and cannot
# emulate XGETBV/XSETBV there: QEMU stops the guest with "KVM internal error" and never exits (so
# `exit-after=` never fired). Under it, runs pass `noxsave` (FXSAVE for FPU threads) unless ARGS has it.
NESTED_NOXSAVE := $(if $(and $(filter kvm,$(ACCEL_USED)),$(if $(CPU_VIRT),,yes)),$(if $(filter noxsave,$(ARGS)),,noxsave) $(if $(filter nosmap,$(ARGS)),,nosmap))
export KERNEL_CMDLINE := $(strip $(ARGS) $(NESTED_NOXSAVE))
# ARGS as typed, for args-check: $(strip) above would fold a newline into a space unseen.
export ARGS
QEMU_BOOT = $(if $(filter limine,$(BOOT_USED)),$(QEMU_FIRMWARE) -cdrom $(ISO),-kernel $(KERNEL_ELF) -initrd $(INITRAMFS) -append "$$KERNEL_CMDLINE")
BOOT_MEDIA = $(if $(filter limine,$(BOOT_USED)),iso $(if $(filter uefi,$(FIRMWARE)),ovmf-vars),kernel $(INITRAMFS))

# Runs QEMU and turns its exit status into make's: 33 is the kernel's success code (0x10). The kernel
# always ends through isa-debug-exit, so a plain 0 means the guest reset (with -no-reboot, a triple
# fault ends QEMU with status 0) or was powered off from outside: a failure for scripts.
define run_qemu
	@printf '%s\n' "$(strip $(QEMU) $(QEMU_COMMON) $(subst "$$KERNEL_CMDLINE",$$(printf %q "$$KERNEL_CMDLINE"),$(QEMU_BOOT)) $(1) $(QEMU_ARGS))"
	@status=0; $(QEMU) $(QEMU_COMMON) $(QEMU_BOOT) $(1) $(QEMU_ARGS) || status=$$?; \
	case $$status in \
	  33) echo "qemu: the kernel exited with success (0x10)";; \
	  35) echo "qemu: the kernel exited with failure (0x11)"; exit 1;; \
	  0) echo "qemu: exited 0 without the kernel's exit code: the guest reset (a triple fault?) or was powered off" >&2; exit 1;; \
	  *) echo "qemu: exit status $$status"; exit 1;; \
	esac
endef

banner = @printf '\n==> %s  [%s]\n' "$(1)" "$$(date +%T)"

.PHONY: limine-check bench-linux bench-guests-quick linux-guest guest-programs help run debug test check loom bench-quick ktest ktest-kvm ktest-short-slice ktest-cpu-max first-run iso limine limine-files bench kernel test-kernel \
	deps host-deps rust-deps user-deps args-check boot-check ovmf-vars clean user user-programs user-oracle busybox shell-test user-kernel qemu10 trace smoke-initramfs boot-max image soak

help:
	@echo "make run        build the kernel and boot it (SMP=$(SMP), ARGS=..., BOOT=auto|limine|pvh, FIRMWARE=bios|uefi)"
	@echo "make debug      boot stopped at the first instruction, gdb stub on :1234"
	@echo "make test       everything below marked (test), in that order; stops at the first failing stage"
	@echo "make check      (test) host unit tests and the kernel's layer check"
	@echo "make loom       (test) the loom models of the lock-free parts"
	@echo "make bench-quick (test) smoke run of every benchmark row, nothing timed is asserted"
	@echo "make ktest-kvm  (test) short KVM run of the x2APIC and TSC-deadline paths, where /dev/kvm opens"
	@echo "make ktest-short-slice (test) the preemption races at -smp 2 with a 100 us slice"
	@echo "make ktest-cpu-max (test) the in-kernel tests of paths only -cpu max has under TCG (FSGSBASE)"
	@echo "make ktest      (test) in-kernel tests in QEMU at -smp $(KTEST_SMP) (KTEST_ARGS=\"--filter NAME\")"
	@echo "make soak       (test, 30 s there) the stress tests under preemption for SECONDS=$(SOAK_SECONDS) at SMP=8, with a verdict"
	@echo "make boot-max   (test) boot at -smp $(MAX_SMP) with x2APIC under QEMU 10, every CPU must come online"
	@echo "make first-run  (test) make run SMP=2 with exit-after=2 and a bad option, no terminal: it is reported, the kernel powers off by itself"
	@echo "make limine-check (test) where Limine is present: BIOS and UEFI boots with maxcpus=, the left-out CPUs parked"
	@echo "make user       build the user test programs (musl, static) and $(INITRAMFS)"
	@echo "make user-oracle (check) run every user program on the host Linux, record its lines in $(USER_EXPECTED)/"
	@echo "make shell-test (test) the scripted busybox shell session, on the host Linux and on the kernel at -smp $(SHELL_TEST_SMP)"
	@echo "make user-kernel (test, one boot per CPU count there) every user program as init of the kernel at -smp $(USER_KERNEL_SMP), compared with Linux"
	@echo "make bench      the benchmark: part 1 natively beside Linux, part 2 in QEMU (BENCH_QEMU=qemu10: QEMU 10)"
	@echo "make trace      boot with the scheduling trace on for SECONDS=$(TRACE_SECONDS) s; target/trace/trace.json, timeline.svg, summary.txt"
	@echo "make bench-linux the two-guest part only: the same programs on Debian's Linux and on ours, per operation"
	@echo "make kernel     build the kernel ELF only ($(KERNEL_ELF))"
	@echo "make test-kernel build the test kernel only ($(TEST_ELF))"
	@echo "make iso        hybrid BIOS/UEFI Limine ISO in $(ISO) (needs LIMINE_DIR)"
	@echo "make image      hybrid BIOS/UEFI disk image for a USB stick in $(IMAGE) (needs LIMINE_DIR)"
	@echo "make limine     fetch Limine $(LIMINE_BRANCH) into LIMINE_DIR=$(LIMINE_DIR)"
	@echo "make qemu10     unpack QEMU 10 from bookworm-backports into $(QEMU10_DIR) (the system QEMU stays)"
	@echo "make deps       install what the other targets need (QEMU, xorriso, mtools, musl, Rust target)"
	@echo "make clean      remove target/"
	@echo "Options: the commented block at the top of this Makefile."

# ---- installing what is missing ------------------------------------------------------------------

deps: host-deps rust-deps user-deps

host-deps:
	@missing=""; \
	command -v $(QEMU) >/dev/null 2>&1 || missing="$$missing qemu-system-x86"; \
	command -v xorriso >/dev/null 2>&1 || missing="$$missing xorriso"; \
	command -v mformat >/dev/null 2>&1 || missing="$$missing mtools"; \
	command -v musl-gcc >/dev/null 2>&1 || missing="$$missing musl-tools"; \
	command -v cpio >/dev/null 2>&1 || missing="$$missing cpio"; \
	if [ "$(FIRMWARE)" = uefi ] && [ -z "$(OVMF_CODE)" ]; then missing="$$missing ovmf"; fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; \
	  elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	  else echo "deps: missing:$$missing; not root and no sudo: install them yourself" >&2; exit 1; fi; \
	  echo "deps: installing$$missing"; \
	  $$sudo apt-get update -qq </dev/null; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing </dev/null; \
	fi

# rustup's automatic install may be switched off, so the pinned toolchain and what the kernel
# target needs are installed here, each only when absent.
rust-deps:
	@if ! command -v rustup >/dev/null 2>&1; then \
	  echo "deps: no rustup; make sure toolchain $(TOOLCHAIN) has the $(TARGET) target and rust-src"; exit 0; fi; \
	if ! rustup toolchain list | grep -q "^$(TOOLCHAIN)-"; then \
	  rustup toolchain install $(TOOLCHAIN) --profile minimal --component rust-src,clippy,rustfmt --target $(TARGET); fi; \
	rustup target list --installed --toolchain $(TOOLCHAIN) | grep -qx $(TARGET) || \
	  rustup target add --toolchain $(TOOLCHAIN) $(TARGET); \
	rustup component list --installed --toolchain $(TOOLCHAIN) | grep -q '^rust-src' || \
	  rustup component add --toolchain $(TOOLCHAIN) rust-src

# ---- building ------------------------------------------------------------------------------------

kernel: rust-deps
	$(CARGO_KERNEL)

test-kernel: rust-deps
	CARGO_TARGET_DIR=$(TEST_TARGET_DIR) $(CARGO_KERNEL) --features ktest
	cp $(TEST_TARGET_DIR)/$(TARGET)/$(PROFILE)/kernel $(TEST_ELF)

# The ISO: the kernel, limine.cfg as limine.conf (its cmdline replaced by ARGS when ARGS is set),
# and Limine's BIOS and UEFI boot images; then Limine's BIOS boot code goes into the ISO itself.
iso: args-check host-deps limine-files kernel $(INITRAMFS)
	rm -rf $(ISO_ROOT)
	mkdir -p $(ISO_ROOT)/boot/limine $(ISO_ROOT)/EFI/BOOT
	cp $(KERNEL_ELF) $(ISO_ROOT)/boot/kernel
	cp $(INITRAMFS) $(ISO_ROOT)/boot/initramfs.cpio
	awk 'ENVIRON["KERNEL_CMDLINE"] != "" && /^[[:space:]]*cmdline:/ { match($$0, /cmdline:/); print substr($$0, 1, RSTART - 1) "cmdline: " ENVIRON["KERNEL_CMDLINE"]; next } { print }' \
	  limine.cfg > $(ISO_ROOT)/boot/limine/limine.conf
	cp $(addprefix $(LIMINE_DIR)/,limine-bios.sys limine-bios-cd.bin limine-uefi-cd.bin) $(ISO_ROOT)/boot/limine/
	cp $(LIMINE_DIR)/BOOTX64.EFI $(ISO_ROOT)/EFI/BOOT/
	xorriso -as mkisofs -quiet -R -r -J -b boot/limine/limine-bios-cd.bin -no-emul-boot -boot-load-size 4 -boot-info-table \
	  --efi-boot boot/limine/limine-uefi-cd.bin -efi-boot-part --efi-boot-image --protective-msdos-label \
	  $(ISO_ROOT) -o $(ISO)
	@if [ -n "$(LIMINE_TOOL)" ]; then $(LIMINE_TOOL) bios-install $(ISO); \
	else $(call LIMINE_NO_TOOL,iso,the ISO boots from CD and under UEFI but not from a USB stick under BIOS); fi
	@echo "iso: $(ISO)"

# The programs the in-kernel tests (kernel/src/user_tests.rs) run: static musl programs from
# user/smoke, fixed-address executables (static-PIE: $(USER_BIN)/staticpie below).
$(SMOKE_INITRAMFS): $(SMOKE_SRC) | host-deps
	rm -rf $(SMOKE_ROOT)
	mkdir -p $(SMOKE_ROOT)/bin
	musl-gcc -static -O2 -Wall -o $(SMOKE_ROOT)/init user/smoke/init.c
	musl-gcc -static -O2 -Wall -Wno-infinite-recursion -o $(SMOKE_ROOT)/bin/fault user/smoke/fault.c
	musl-gcc -static -O2 -Wall -pthread -o $(SMOKE_ROOT)/bin/threads user/smoke/threads.c
	musl-gcc -static -O2 -Wall -pthread -o $(SMOKE_ROOT)/bin/fpu user/smoke/fpu.c
	musl-gcc -static -O2 -Wall -pthread -o $(SMOKE_ROOT)/bin/fuzz user/smoke/fuzz.c
	for p in wait churn forkcow execmt shmem; do musl-gcc -static -O2 -Wall -pthread -D_GNU_SOURCE -Iuser/include -o $(SMOKE_ROOT)/bin/$$p user/src/$$p.c || exit 1; done
	@# The user fuzzer with its process operations, beside the smoke one (it needs Linux's <asm/...>).
	$(MAKE) --no-print-directory $(USER_INC)
	musl-gcc -static -O2 -Wall -pthread -D_GNU_SOURCE -isystem $(USER_INC) -Iuser/include -o $(SMOKE_ROOT)/bin/fuzzmix user/src/fuzz.c
	mkdir -p $(SMOKE_ROOT)/scripts
	printf '#!/bin/execmt from-script\n' > $(SMOKE_ROOT)/scripts/script
	printf '#! /scripts/script  inner \n' > $(SMOKE_ROOT)/scripts/nested
	printf 'hello\n' > $(SMOKE_ROOT)/scripts/garbage
	printf '#!\n' > $(SMOKE_ROOT)/scripts/empty-shebang
	chmod +x $(SMOKE_ROOT)/scripts/*
	cd $(SMOKE_ROOT) && find . | LC_ALL=C sort | cpio -o -H newc --quiet > $(abspath $(SMOKE_INITRAMFS))
	@echo "initramfs: $(SMOKE_INITRAMFS)"

smoke-initramfs: $(SMOKE_INITRAMFS)

# A hybrid BIOS/UEFI disk image for a USB stick (README, "Booting on hardware"): an MBR with one
# bootable EFI system partition (type 0xef, FAT32, from 1 MiB) holding the kernel, limine.conf,
# limine-bios.sys and EFI/BOOT/BOOTX64.EFI; `limine bios-install` then writes Limine's BIOS stages
# into the MBR and the gap before the partition. UEFI firmware boots EFI/BOOT/BOOTX64.EFI from it.
IMAGE := target/kernel.img
IMAGE_MB ?= 64
image: args-check host-deps kernel $(INITRAMFS)
	@for f in limine-bios.sys BOOTX64.EFI; do [ -f "$(LIMINE_DIR)/$$f" ] || missing="$${missing:-} $$f"; done; \
	if [ -n "$${missing:-}" ]; then \
	  echo "image: LIMINE_DIR=$(LIMINE_DIR) lacks$$missing. Put limine-bios.sys and BOOTX64.EFI (and, for BIOS" >&2; \
	  echo "  boot, Limine's tool built there by make -C LIMINE_DIR) from a Limine 8 binary release" >&2; \
	  echo "  ($(LIMINE_BRANCH)) there: make limine does it where the network allows." >&2; exit 1; fi
	@img=$(IMAGE); part="$$img@@1M"; sectors=$$(( $(IMAGE_MB) * 2048 - 2048 )); \
	le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $$(( $$1 & 255 )) $$(( ($$1 >> 8) & 255 )) $$(( ($$1 >> 16) & 255 )) $$(( ($$1 >> 24) & 255 )); }; \
	rm -f "$$img"; truncate -s $(IMAGE_MB)M "$$img"; \
	printf "\\x80\\xfe\\xff\\xff\\xef\\xfe\\xff\\xff$$(le32 2048)$$(le32 $$sectors)" | dd of="$$img" bs=1 seek=446 conv=notrunc status=none; \
	printf '\x55\xaa' | dd of="$$img" bs=1 seek=510 conv=notrunc status=none; \
	mformat -i "$$part" -F -T $$sectors -v KERNEL ::; \
	mmd -i "$$part" ::/boot ::/boot/limine ::/EFI ::/EFI/BOOT; \
	awk 'ENVIRON["KERNEL_CMDLINE"] != "" && /^[[:space:]]*cmdline:/ { match($$0, /cmdline:/); print substr($$0, 1, RSTART - 1) "cmdline: " ENVIRON["KERNEL_CMDLINE"]; next } { print }' \
	  limine.cfg > target/limine.conf; \
	mcopy -i "$$part" $(KERNEL_ELF) ::/boot/kernel; \
	mcopy -i "$$part" $(INITRAMFS) ::/boot/initramfs.cpio; \
	mcopy -i "$$part" target/limine.conf $(LIMINE_DIR)/limine-bios.sys ::/boot/limine/; \
	mcopy -i "$$part" $(LIMINE_DIR)/BOOTX64.EFI ::/EFI/BOOT/; \
	if [ -n "$(LIMINE_TOOL)" ]; then $(LIMINE_TOOL) bios-install "$$img"; \
	else $(call LIMINE_NO_TOOL,image,the image boots under UEFI only); fi; \
	echo "image: $$img ($(IMAGE_MB) MiB): write it to a whole USB stick, e.g. dd if=$$img of=/dev/sdX bs=4M conv=fsync"

limine-files:
	@[ -n "$(LIMINE_READY)" ] || { echo "iso: $(LIMINE_DIR)/ lacks the Limine files ($(LIMINE_FILES)): run make limine, or set LIMINE_DIR" >&2; exit 1; }

limine:
	@if [ -n "$(LIMINE_READY)" ]; then echo "limine: $(LIMINE_DIR)/ already holds Limine"; exit 0; fi; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	if git clone -q --depth 1 --branch $(LIMINE_BRANCH) $(LIMINE_REPO) "$$tmp/limine" 2>/dev/null \
	  || { mkdir -p "$$tmp/limine" && curl -fsSL "$(LIMINE_REPO:.git=)/archive/refs/tags/$(LIMINE_BRANCH).tar.gz" \
	       | tar -xz -C "$$tmp/limine" --strip-components=1; } 2>/dev/null; then \
	  mkdir -p $(LIMINE_DIR); \
	  for file in $(LIMINE_FILES) Makefile limine.c limine.h limine-bios-hdd.h LICENSE; do cp "$$tmp/limine/$$file" $(LIMINE_DIR)/; done; \
	  echo "limine: Limine $(LIMINE_BRANCH) in $(LIMINE_DIR)/; for BIOS boot from a disk, build its tool: make -C $(LIMINE_DIR)"; \
	else \
	  echo "limine: could not download Limine $(LIMINE_BRANCH) (no network?)." >&2; \
	  echo "  Put limine-bios.sys, limine-bios-cd.bin, limine-uefi-cd.bin and BOOTX64.EFI (and its tool," >&2; \
	  echo "  built by make -C in that folder, for BIOS boot from disk) from a Limine 8 binary release into a folder and" >&2; \
	  echo "  pass LIMINE_DIR=that/folder, or boot without Limine: BOOT=pvh." >&2; \
	  exit 1; \
	fi

ovmf-vars:
	@[ -n "$(OVMF_CODE)" ] || { echo "ovmf: no OVMF firmware in /usr/share/OVMF (make deps FIRMWARE=uefi installs it)" >&2; exit 1; }
	@[ -f $(OVMF_VARS) ] || { mkdir -p target && cp $(OVMF_VARS_TEMPLATE) $(OVMF_VARS); }

# ---- booting -------------------------------------------------------------------------------------

# The kernel command line is one line: a newline in ARGS would split limine.conf's cmdline: (iso,
# image), or be folded into a space unseen (run), so every target that passes ARGS on refuses it.
args-check:
	@case "$$ARGS" in *$$'\n'*) echo "ARGS holds a newline: the kernel command line is one line" >&2; exit 1;; esac

# The guest's shape is checked before QEMU sees it, so a typo gets a sentence instead of QEMU's
# confusing parse of the next word, or a silent reset.
boot-check: args-check
	@case "$(SMP)" in ''|*[!0-9]*|0) echo "SMP must be a CPU count (1 or more), not '$(SMP)'" >&2; exit 1;; esac
	@mem='$(MEM_USED)'; case "$$mem" in \
	  *[0-9][mM]|*[0-9]) mib=$${mem%[mM]};; *[0-9][gG]) mib=$$(( $${mem%[gG]} * 1024 ));; \
	  *) echo "MEM must be a size such as 512M or 2G, not '$$mem'" >&2; exit 1;; esac; \
	case "$$mib" in ''|*[!0-9]*) echo "MEM must be a size such as 512M or 2G, not '$$mem'" >&2; exit 1;; esac; \
	if [ "$$mib" -lt $(MIN_MEM_MIB) ]; then \
	  echo "MEM=$$mem is below the kernel's minimum of $(MIN_MEM_MIB)M (image, boot arena, page tables and a stack per CPU)" >&2; exit 1; fi
	@case "$(BOOT_USED)" in limine|pvh) ;; *) echo "BOOT must be auto, limine or pvh, not $(BOOT)" >&2; exit 1;; esac
	@case "$(ACCEL_USED)" in kvm|tcg) ;; *) echo "ACCEL must be auto, kvm or tcg, not $(ACCEL)" >&2; exit 1;; esac
	@case "$(FIRMWARE)" in bios|uefi) ;; *) echo "FIRMWARE must be bios or uefi, not $(FIRMWARE)" >&2; exit 1;; esac
	@if [ "$(FIRMWARE)" = uefi ] && [ "$(BOOT_USED)" = pvh ]; then \
	  echo "FIRMWARE=uefi boots the Limine ISO, and $(BOOT_WHY) chose pvh: run make limine or set LIMINE_DIR" >&2; exit 1; fi

run: boot-check host-deps $(BOOT_MEDIA)
	@echo "run: boot $(BOOT_USED) ($(BOOT_WHY)), accel $(ACCEL_USED) ($(ACCEL_WHY)), firmware $(FIRMWARE), -smp $(SMP) -m $(MEM_USED)$(if $(NESTED_NOXSAVE), ($(strip $(NESTED_NOXSAVE)) added: a nested KVM cannot emulate XGETBV or CLAC))"
	@echo "run: the serial console is this terminal, in raw mode: Ctrl-C and Ctrl-\\ go to the guest's shell; Ctrl-A X quits QEMU (Ctrl-A H: QEMU's other keys)"
	$(call run_qemu)

debug: boot-check host-deps $(BOOT_MEDIA)
	@echo "debug: boot $(BOOT_USED), accel $(ACCEL_USED); QEMU waits for gdb. In another terminal:"
	@echo "  gdb $(KERNEL_ELF) -ex 'target remote :1234'"
	$(call run_qemu,-s -S)

# ---- testing -------------------------------------------------------------------------------------

check:
	$(call banner,host unit tests)
	cargo test --workspace --exclude kernel
	$(call banner,layer check: the kernel's top-level modules only use the ones below them)
	cargo run -q -p ktest --bin layers
	$(MAKE) --no-print-directory user-oracle

loom:
	$(call banner,loom models$(if $(LOOM_TESTS),, (none yet: no sched/, smp/ or kcore/tests/loom*.rs)))
	@for file in $(LOOM_TESTS); do \
	  crate=$${file%%/*}; name=$$(basename "$$file" .rs); \
	  echo "RUSTFLAGS='--cfg loom' cargo test --release -p $$crate --test $$name"; \
	  RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release -p "$$crate" --test "$$name"; \
	done

# The benchmark's --quick mode shrinks every sample count: a smoke run that each row still works,
# part 2's in-kernel rows (bench=quick in QEMU, a few seconds) included where QEMU is installed.
bench-quick: rust-deps
	$(call banner,bench --quick)
	@no_qemu=""; if ! command -v $(QEMU) >/dev/null 2>&1; then no_qemu=" --no-qemu"; \
	  echo "bench: no $(QEMU) in PATH: part 2, the in-kernel rows in QEMU, is skipped (make deps installs it)"; fi; \
	echo "cargo run --release -p bench -- --quick --accel $(ACCEL)$$no_qemu"; \
	cargo run --release -p bench -- --quick --accel $(ACCEL)$$no_qemu
	@$(MAKE) --no-print-directory bench-guests-quick

ktest: host-deps test-kernel $(SMOKE_INITRAMFS)
	$(call banner,in-kernel tests in QEMU (accel $(ACCEL_USED): $(ACCEL_WHY)))
	cargo run -q --release -p ktest -- --kernel $(TEST_ELF) --initrd $(SMOKE_INITRAMFS) --smp $(KTEST_SMP) --accel $(ACCEL_USED) \
	  --timeout $(KTEST_TIMEOUT) $(KTEST_ARGS)

test: deps
	$(MAKE) --no-print-directory check
	$(MAKE) --no-print-directory loom
	$(MAKE) --no-print-directory bench-quick
	$(MAKE) --no-print-directory ktest-kvm
	$(MAKE) --no-print-directory ktest-short-slice
	$(MAKE) --no-print-directory ktest-cpu-max
	$(MAKE) --no-print-directory ktest
	$(MAKE) --no-print-directory boot-max
	$(MAKE) --no-print-directory first-run
	$(MAKE) --no-print-directory limine-check
	$(MAKE) --no-print-directory user-kernel USER_KERNEL_SMP=1,2,4,8 USER_KERNEL_ARGS=--one-boot
	$(MAKE) --no-print-directory shell-test SHELL_TEST_SMP=1,2,4,8
	$(MAKE) --no-print-directory soak SECONDS=30

ktest-kvm: host-deps test-kernel
	$(call banner,KVM functional run (x2APIC and TSC-deadline paths))
	@if [ -z "$(KVM_OPENS)" ]; then echo "skipped: /dev/kvm does not open here"; exit 0; fi; \
	cargo run -q --release -p ktest -- --kernel $(TEST_ELF) --smp 2 --accel kvm --cpu '$(KVM_CPU)' \
	  --timeout 600 --append "slice-us=20000 noxsave nosmap" $(foreach t,$(KVM_TESTS),--filter $(t))

# Boot with the trace on (the demo, /bin/init, unless ARGS says otherwise), power off after SECONDS,
# and turn what the kernel wrote to QEMU's debug console into the Perfetto/Chrome JSON, the
# timeline picture and the summary, checking the trace's conservation on the way.
TRACE_SECONDS = $(or $(SECONDS),2)
TRACE_DIR := target/trace
trace: rust-deps
	$(call banner,trace: -smp $(SMP)$(comma) $(TRACE_SECONDS) s$(comma) categories $(TRACE))
	@mkdir -p $(TRACE_DIR) && rm -f $(TRACE_DIR)/raw.bin
	$(MAKE) --no-print-directory run ARGS='trace=$(TRACE) exit-after=$(TRACE_SECONDS) init=/bin/init $(ARGS)' \
	  QEMU_ARGS='$(QEMU_ARGS) -debugcon file:$(TRACE_DIR)/raw.bin'
	cargo run -q --release -p tracetool -- $(TRACE_DIR)/raw.bin --out $(TRACE_DIR) --check \
	  --title "make trace SMP=$(SMP) SECONDS=$(TRACE_SECONDS) $(ARGS)"

# Paths that QEMU's default CPU model lacks under TCG and `-cpu max` has: with FSGSBASE, the
# paranoid entry (NMI, #DF, #MC) saves and reloads the GS base with RDGSBASE/WRGSBASE.
CPU_MAX_TESTS := nmi_paranoid_gs
ktest-cpu-max: host-deps test-kernel
	$(call banner,in-kernel tests under TCG -cpu max (FSGSBASE))
	cargo run -q --release -p ktest -- --kernel $(TEST_ELF) --smp 2 --accel tcg --cpu max \
	  --timeout $(KTEST_TIMEOUT) $(foreach t,$(CPU_MAX_TESTS),--filter $(t))

# Races that need frequent preemption, with a 100 us slice: a thread ending with the last handle
# of its address space, preempted at the end of the space's destruction.
SHORT_SLICE_TESTS := aspace_threads_own_their_space
ktest-short-slice: host-deps test-kernel
	$(call banner,in-kernel tests with a 100 us slice)
	cargo run -q --release -p ktest -- --kernel $(TEST_ELF) --smp 2 --accel $(ACCEL_USED) \
	  --timeout $(KTEST_TIMEOUT) --append "slice-us=100" $(foreach t,$(SHORT_SLICE_TESTS),--filter $(t))

# Part 1 natively, then part 2: the release kernel boots in QEMU with `bench` (accelerator as
# ACCEL=auto picks it) and its rows join the same report in target/bench.
# BENCH_QEMU=qemu10: part 2 under QEMU 10 (make qemu10) and TCG; where QEMU 10 cannot be had,
# the system's QEMU runs it.
bench: rust-deps
	$(call banner,bench: part 1 natively$(comma) part 2 in QEMU)
	@no_qemu=""; if ! command -v $(QEMU) >/dev/null 2>&1; then no_qemu=" --no-qemu"; \
	  echo "bench: no $(QEMU) in PATH: part 2, the in-kernel rows in QEMU, is skipped (make deps installs it)"; fi; \
	part2="--accel $(ACCEL)$$no_qemu"; \
	if [ "$(BENCH_QEMU)" = qemu10 ]; then \
	  if $(MAKE) --no-print-directory qemu10; then \
	    part2="--accel tcg --qemu $(CURDIR)/$(QEMU10)$(if $(BENCH_ICOUNT), --icount $(BENCH_ICOUNT))"; \
	  else echo "bench: QEMU 10 could not be unpacked: part 2 runs under the system's QEMU"; fi; \
	fi; \
	echo "cargo run --release -p bench -- $$part2"; \
	cargo run --release -p bench -- $$part2
	@$(MAKE) --no-print-directory bench-linux

# ---- QEMU 10 beside the system's QEMU ------------------------------------------------------------

# QEMU 10.0 from Debian's bookworm-backports, unpacked into target/qemu10 and run through a wrapper
# (target/qemu10/qemu-system-x86_64) without installing anything: a private sources list naming the
# system's own Debian mirror, apt's lists and cache under target/qemu10/apt, `apt-get download` of
# the QEMU packages and of the shared libraries the system lacks, `dpkg-deb -x` of each. Unlike
# QEMU 7.2 it starts a second CPU under `-icount` (guest time following the instruction count).
QEMU10_DIR := target/qemu10
QEMU10 := $(QEMU10_DIR)/qemu-system-x86_64
QEMU10_APT = -o Dir::Etc::SourceList=$(CURDIR)/$(QEMU10_DIR)/apt/sources.list -o Dir::Etc::SourceParts=$(CURDIR)/$(QEMU10_DIR)/apt/sources.list.d \
	-o Dir::State::Lists=$(CURDIR)/$(QEMU10_DIR)/apt/lists -o Dir::Cache=$(CURDIR)/$(QEMU10_DIR)/apt/cache -o APT::Get::List-Cleanup=0 \
	-o Debug::NoLocking=1

qemu10: $(QEMU10)

$(QEMU10):
	@mirror=$$( { sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null || true; \
	              sed -n 's/^deb  *\(\[[^]]*\] *\)\{0,1\}\([^ ]*\)  *bookworm .*/\2/p' /etc/apt/sources.list 2>/dev/null || true; } \
	            | grep -v security | head -n 1 ); \
	[ -n "$$mirror" ] || { echo "qemu10: no Debian mirror in /etc/apt/sources.list{,.d}" >&2; exit 1; }; \
	keyring=/usr/share/keyrings/debian-archive-keyring.gpg; \
	root=$(CURDIR)/$(QEMU10_DIR); \
	rm -rf "$$root/root" "$$root/debs"; \
	mkdir -p "$$root/apt/lists/partial" "$$root/apt/cache/archives/partial" "$$root/apt/sources.list.d" "$$root/debs" "$$root/root"; \
	printf 'deb [signed-by=%s] %s bookworm main\ndeb [signed-by=%s] %s bookworm-backports main\n' \
	  "$$keyring" "$$mirror" "$$keyring" "$$mirror" > "$$root/apt/sources.list"; \
	echo "qemu10: apt-get update (private lists in $(QEMU10_DIR)/apt, mirror $$mirror)"; \
	apt-get $(QEMU10_APT) update -qq </dev/null; \
	cd "$$root/debs"; \
	apt-get $(QEMU10_APT) download -qq qemu-system-x86/bookworm-backports qemu-system-common/bookworm-backports \
	  qemu-system-data/bookworm-backports </dev/null; \
	for deb in *.deb; do dpkg-deb -x "$$deb" "$$root/root"; done; \
	bin="$$root/root/usr/bin/qemu-system-x86_64"; \
	for round in 1 2 3; do \
	  missing=$$(LD_LIBRARY_PATH="$$root/root/usr/lib/x86_64-linux-gnu" ldd "$$bin" | sed -n 's/^\t*\([^ ]*\) => not found/\1/p'); \
	  [ -z "$$missing" ] && break; \
	  pkgs=$$(for lib in $$missing; do apt-cache $(QEMU10_APT) search --names-only "^$$(echo "$$lib" | sed 's/\.so\.*/ /;s/ .*//;s/_/-/g;s/^lib//')" \
	          | cut -d' ' -f1 | head -n 1; done | sort -u); \
	  echo "qemu10: the system lacks $$missing; downloading $$pkgs"; \
	  apt-get $(QEMU10_APT) download -qq $$pkgs </dev/null; \
	  for deb in *.deb; do dpkg-deb -x "$$deb" "$$root/root"; done; \
	done; \
	printf '#!/bin/sh\n# QEMU 10 from bookworm-backports, unpacked by `make qemu10`; not installed.\nroot=$$(dirname "$$(readlink -f "$$0")")/root\nQEMU_MODULE_DIR="$$root/usr/lib/x86_64-linux-gnu/qemu" LD_LIBRARY_PATH="$$root/usr/lib/x86_64-linux-gnu$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}" exec "$$root/usr/bin/qemu-system-x86_64" -L "$$root/usr/share/qemu" -L /usr/share/seabios "$$@"\n' \
	  > "$$root/qemu-system-x86_64"; \
	chmod +x "$$root/qemu-system-x86_64"; \
	"$$root/qemu-system-x86_64" --version | head -n 1


# The soak: the test kernel repeats its stress tests (ping-pong, spawn/exit churn, mutex, wake-ups,
# migrations, frames, IPIs, TLB torture, address spaces) under preemption every millisecond for
# SECONDS seconds at -smp SMP (8 unless given), prints every CPU's counters each minute and ends
# with a verdict: every run passed, no CPU stalled, free frames and heap bytes (less the sleep
# queues' capacity, a bounded high-water mark) exactly back at their level after the first round
# (at least three rounds). `make test` runs 30 seconds of it.
SOAK_SECONDS = $(or $(SECONDS),600)
SOAK_SMP = $(if $(filter command line environment,$(origin SMP)),$(SMP),8)
soak: host-deps test-kernel
	$(call banner,soak: $(SOAK_SECONDS) s of the stress tests at -smp $(SOAK_SMP) (accel $(ACCEL_USED)))
	@case "$(SOAK_SECONDS)" in ''|*[!0-9]*|0) echo "SECONDS must be a number of seconds, not '$(SOAK_SECONDS)'" >&2; exit 1;; esac
	@log=target/soak.log; status=0; \
	cmd="$(QEMU) -machine q35 -accel $(ACCEL_USED) $(if $(filter kvm,$(ACCEL_USED)),-cpu '$(KVM_CPU)') -smp $(SOAK_SMP) -m 1G -serial stdio -display none -no-reboot \
	  -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel $(TEST_ELF) -append 'soak=$(SOAK_SECONDS) slice-us=1000$(if $(filter kvm,$(ACCEL_USED)), noxsave)'"; \
	echo "$$cmd"; eval timeout $$(( $(SOAK_SECONDS) + 600 )) "$$cmd" </dev/null | tee "$$log" | grep --line-buffered "^soak\|^  " || true; \
	status=$${PIPESTATUS[0]:-0}; \
	if ! grep -q "^soak: PASSED" "$$log"; then echo "soak: no PASSED verdict (see $$log)" >&2; exit 1; fi

# The largest machine the kernel is tested on: QEMU 10 (make qemu10; QEMU 7.2's q35 stops at 255
# CPUs) at -smp $(MAX_SMP), x2APIC (APIC ids past 254), direct PVH boot, no demo. Every CPU must
# come online and the kernel must power off by itself; the line says how long the boot took.
# (Limine 8.2.0 resets such a machine: it counts the boot CPU among the APs past 255.)
MAX_SMP ?= 288
MAX_SMP_MEM ?= 2G
boot-max: qemu10 kernel
	$(call banner,boot at -smp $(MAX_SMP) under QEMU 10 (x2APIC): every CPU online)
	@log=target/boot-max.log; start=$$(date +%s%N); status=0; \
	cmd="$(QEMU10) -machine q35 -accel tcg -cpu qemu64,+x2apic -smp $(MAX_SMP) -m $(MAX_SMP_MEM) -serial file:$$log \
	  -display none -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel $(KERNEL_ELF) -append 'exit-after=1 demo=0'"; \
	echo "$$cmd"; eval timeout 900 "$$cmd" </dev/null || status=$$?; \
	ms=$$(( ($$(date +%s%N) - start) / 1000000 )); \
	grep -E "smp: [0-9]+/[0-9]+ CPUs online" "$$log" || true; \
	if [ "$$status" != 33 ]; then echo "boot-max: QEMU ended with status $$status (33 is the kernel's success; 0 is a reset), after $$ms ms; log in $$log" >&2; tail -n 20 "$$log" >&2; exit 1; fi; \
	if ! grep -q "smp: $(MAX_SMP)/$(MAX_SMP) CPUs online" "$$log"; then echo "boot-max: not every one of $(MAX_SMP) CPUs came online; log in $$log" >&2; exit 1; fi; \
	echo "boot-max: $(MAX_SMP)/$(MAX_SMP) CPUs online, boot to power-off in $$ms ms (exit-after=1 included)"


# make run as a new user first tries it, without a terminal: /init (the shell) waits for input
# with every CPU halted and tickless, and exit-after= must still power off with the kernel's
# success code (it once never came: only a timer interrupt checked the deadline). A mistyped
# option must be reported even under loglevel=error (which once hid the only sign of it), and
# loglevel=error must hide the info lines. Then a machine too small for the kernel, and
# loglevel=trace.
FIRST_RUN_ARGS := loglevel=error exit-after=2 no-such-option
first-run:
	$(call banner,first run: make run SMP=2 ARGS='$(FIRST_RUN_ARGS)' without a terminal)
	@log=target/first-run.log; mkdir -p target; \
	timeout -k 10 300 $(MAKE) --no-print-directory run SMP=2 MEM= BOOT=pvh ARGS='$(FIRST_RUN_ARGS)' QEMU_ARGS= </dev/null 2>&1 | tee $$log; \
	grep -q 'warning: cmdline: unknown option `no-such-option` ignored' $$log || { echo "first-run: the mistyped option was not reported (log: $$log)" >&2; exit 1; }; \
	if grep -q 'CPUs online' $$log; then echo "first-run: loglevel=error still printed info lines (log: $$log)" >&2; exit 1; fi
	@# QEMU by hand with too little memory (make run refuses it): the PVH entry says so and fails,
	@# where it once triple-faulted without a word (QEMU's 0 under -no-reboot).
	@status=0; out=$$($(QEMU) -machine q35 -accel tcg -smp 1 -m 10M -serial stdio -display none -no-reboot \
	  -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel $(KERNEL_ELF) -append exit-after=1 </dev/null 2>&1) || status=$$?; \
	if [ "$$status" != 35 ] || ! grep -q "does not fit in this machine's RAM" <<<"$$out"; then \
	  echo "first-run: at -m 10M the kernel did not say it lacks memory (QEMU status $$status): $$out" >&2; exit 1; fi; \
	echo "first-run: -m 10M: the kernel says it does not fit and exits with its failure code"
	@# loglevel=trace shows the debug lines (the CPU map) and the trace lines (PCID assignments),
	@# where debug and trace once showed nothing more than info.
	@log=target/first-run-trace.log; \
	timeout -k 10 300 $(MAKE) --no-print-directory run SMP=2 MEM= BOOT=pvh ARGS='loglevel=trace exit-after=5 init=/bin/true' QEMU_ARGS= </dev/null >$$log 2>&1 \
	  || { echo "first-run: the loglevel=trace boot failed (log: $$log)" >&2; exit 1; }; \
	grep -q '] debug: smp: cpu1 is APIC id' $$log && grep -q '] trace: pcid: ' $$log \
	  || { echo "first-run: loglevel=trace printed no debug or no trace lines (log: $$log)" >&2; exit 1; }; \
	echo "first-run: loglevel=trace: the CPU map and the PCID assignments are shown"

# Limine's own path, where Limine is present (LIMINE_DIR holds its files; without them, as in CI,
# the stage says it is skipped): the ISO boots by BIOS with maxcpus=2 at -smp 4, and by UEFI with
# maxcpus=3 where OVMF is installed. The CPUs left out must all be in the kernel's parking stub
# before the loader's memory is reclaimed (they once kept polling that memory), and a stress run
# in that memory must pass and power off with the kernel's success code.
limine-check: host-deps
	$(call banner,Limine boots with CPUs left out: parked before the loader's memory is reclaimed)
	@if [ -z "$(LIMINE_READY)" ]; then echo "limine-check: skipped: no Limine files in $(LIMINE_DIR)/ (make limine fetches them)"; exit 0; fi; \
	for fw in bios uefi; do \
	  if [ $$fw = bios ]; then keep=2; else keep=3; fi; \
	  log=target/limine-check-$$fw.log; \
	  timeout -k 10 300 $(MAKE) --no-print-directory run BOOT=limine FIRMWARE=$$fw SMP=4 MEM= QEMU_ARGS= \
	    ARGS="maxcpus=$$keep init=/bin/stress -- all 2000" </dev/null >$$log 2>&1; status=$$?; \
	  if [ $$fw = uefi ] && grep -q "no OVMF firmware" $$log; then echo "limine-check: uefi skipped: no OVMF"; continue; fi; \
	  left=$$((4 - keep)); \
	  grep -q "smp: $$left CPUs left out of 4 parked before the loader's memory is reclaimed ($$left in the stub)" $$log \
	    || { echo "limine-check: $$fw: the $$left CPUs left out were not all parked in the stub (log: $$log)" >&2; exit 1; }; \
	  grep -q '^# stress: PASSED' $$log && [ $$status = 0 ] \
	    || { echo "limine-check: $$fw: the stress run failed or the boot did not power off cleanly (status $$status, log: $$log)" >&2; exit 1; }; \
	  echo "limine-check: $$fw: $$left of 4 CPUs parked in the stub, stress PASSED, powered off"; \
	done

clean:
	cargo clean

# ---- user programs -------------------------------------------------------------------------------
#
# Static C programs built with musl-gcc. musl ships without Linux's own headers, so <linux/...>
# and <asm/...> come from Debian's linux-libc-dev through a folder of links (target/user/include):
# adding all of /usr/include would pull in glibc's headers too. user/programs.toml says how each
# must end; user-oracle runs them on the host (Linux is the oracle) and packs the initramfs.

USER_BIN := target/user/bin
USER_INC := target/user/include
USER_EXPECTED := target/user/expected
LINUX_ASM_DIR := /usr/include/x86_64-linux-gnu/asm
USER_CFLAGS := -static -O2 -Wall -Wextra -Werror -pthread -D_GNU_SOURCE -isystem $(USER_INC) -Iuser/include
# One program per kind of user fault, all from user/src/fault.c.
FAULT_KINDS := read write noncanon gp ud div int3 stack sysret abort kill inhandler ignored
# One program per kind of forged signal frame, all from user/src/sigforge.c.
FORGE_KINDS := cs flags xstate rip handler
USER_BINS := $(patsubst user/src/%.c,$(USER_BIN)/%,$(filter-out user/src/fault.c user/src/sigforge.c,$(wildcard user/src/*.c))) \
	$(addprefix $(USER_BIN)/fault_,$(FAULT_KINDS)) $(addprefix $(USER_BIN)/sigforge_,$(FORGE_KINDS))

user-deps:
	@missing=""; \
	command -v $(USER_CC) >/dev/null 2>&1 || missing="$$missing musl-tools"; \
	[ -f $(LINUX_ASM_DIR)/unistd_64.h ] && [ -f /usr/include/linux/futex.h ] || missing="$$missing linux-libc-dev"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; \
	  elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	  else echo "deps: missing:$$missing; not root and no sudo: install them yourself" >&2; exit 1; fi; \
	  echo "deps: installing$$missing"; \
	  $$sudo apt-get update -qq </dev/null; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing </dev/null; \
	fi

$(USER_INC): | user-deps
	mkdir -p $@
	ln -sfn /usr/include/linux $@/linux
	ln -sfn $(LINUX_ASM_DIR) $@/asm
	ln -sfn /usr/include/asm-generic $@/asm-generic

$(USER_BIN)/fault_%: user/src/fault.c user/include/ut.h | $(USER_INC)
	@mkdir -p $(USER_BIN)
	$(USER_CC) $(USER_CFLAGS) -DFAULT_$(shell echo '$*' | tr a-z A-Z) $< -o $@

$(USER_BIN)/sigforge_%: user/src/sigforge.c user/include/ut.h | $(USER_INC)
	@mkdir -p $(USER_BIN)
	$(USER_CC) $(USER_CFLAGS) -DFORGE_$(shell echo '$*' | tr a-z A-Z) $< -o $@

$(USER_BIN)/%: user/src/%.c user/include/ut.h | $(USER_INC)
	@mkdir -p $(USER_BIN)
	$(USER_CC) $(USER_CFLAGS) $< -o $@

# The static-PIE program. Debian's musl-gcc.specs always asks for a dynamic linker, but its musl
# ships rcrt1.o (the start file that relocates a static PIE itself), so gcc links one directly:
# musl's headers and start files, -static-pie, no dynamic linker.
MUSL_LIB := /usr/lib/x86_64-linux-musl
MUSL_INC := /usr/include/x86_64-linux-musl
$(USER_BIN)/staticpie: user/src/staticpie.c user/include/ut.h | $(USER_INC)
	@mkdir -p $(USER_BIN)
	gcc -fPIE -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -nostdinc -isystem $(MUSL_INC) -isystem $$(gcc -print-file-name=include) \
	  -isystem $(USER_INC) -Iuser/include -c $< -o $@.o
	gcc -static-pie -nostdlib -o $@ $(MUSL_LIB)/rcrt1.o $(MUSL_LIB)/crti.o $$(gcc -print-file-name=crtbeginS.o) $@.o \
	  $(MUSL_LIB)/libc.a $$(gcc -print-libgcc-file-name) $$(gcc -print-file-name=crtendS.o) $(MUSL_LIB)/crtn.o
	@rm -f $@.o

user-programs: $(USER_BINS)

# Debian's busybox-static (a static glibc executable, run unmodified), fetched with `apt-get
# download` and unpacked with dpkg-deb into target/busybox: the binary, its applet list as the
# host runs it (`busybox --list`), and the package version. Never committed.
BUSYBOX_DIR := target/busybox
BUSYBOX := $(BUSYBOX_DIR)/busybox

busybox: $(BUSYBOX)

$(BUSYBOX):
	@rm -rf $(BUSYBOX_DIR); mkdir -p $(BUSYBOX_DIR)/debs $(BUSYBOX_DIR)/root
	@cd $(BUSYBOX_DIR)/debs && if ! apt-get download -qq busybox-static </dev/null 2>download.log; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else sudo="no"; fi; \
	  if [ "$$sudo" != no ]; then echo "busybox: apt-get update (a fresh machine has no package lists)"; \
	    $$sudo apt-get update -qq </dev/null >/dev/null 2>&1 || true; fi; \
	  if ! apt-get download -qq busybox-static </dev/null 2>download.log; then \
	    echo "busybox: apt-get download busybox-static failed: $$(tail -n 1 download.log)" >&2; exit 1; fi; fi
	@cd $(BUSYBOX_DIR) && dpkg-deb -x debs/busybox-static_*.deb root && cp root/bin/busybox busybox.tmp && \
	  ./busybox.tmp --list > applets && printf 'busybox-static %s\n' "$$(dpkg-deb -f debs/busybox-static_*.deb Version)" > version && \
	  rm -rf root debs && mv busybox.tmp busybox
	@echo "busybox: $$(cat $(BUSYBOX_DIR)/version), $$(wc -l < $(BUSYBOX_DIR)/applets) applets, in $(BUSYBOX_DIR)/"

# The initramfs (user/README.md): /init starts the shell; /bin holds every program of the manifest,
# busybox and a link per applet, the project's tools (stress, kstat, the two-guest programs as
# bench-NAME); /etc comes from user/rootfs/etc.
GUEST_BIN := target/user/bench
GUEST_PROGRAMS := $(addprefix $(GUEST_BIN)/,$(basename $(notdir $(filter-out user/bench/tiny.c,$(wildcard user/bench/*.c)))))
# The tools of the initramfs that are not test programs (user/tools: /init's shinit, kstat): built
# like them, into their own folder, since every binary of target/user/bin must be in the manifest.
USER_TOOLS := target/user/tools
TOOL_BINS := $(patsubst user/tools/%.c,$(USER_TOOLS)/%,$(wildcard user/tools/*.c))
$(USER_TOOLS)/%: user/tools/%.c user/include/ut.h | $(USER_INC)
	@mkdir -p $(USER_TOOLS)
	$(USER_CC) $(USER_CFLAGS) $< -o $@
ROOTFS_FILES := $(shell find user/rootfs -type f 2>/dev/null | LC_ALL=C sort)
$(INITRAMFS): $(USER_BINS) $(TOOL_BINS) user/programs.toml $(BUSYBOX) $(GUEST_PROGRAMS) $(GUEST_BIN)/tiny $(ROOTFS_FILES)
	cargo run -q -p user-oracle -- initramfs --out $@ --init $(USER_TOOLS)/shinit --busybox $(BUSYBOX) \
	  --add $(USER_TOOLS)/kstat:/bin/kstat \
	  $(foreach g,$(filter-out %/init,$(GUEST_PROGRAMS)) $(GUEST_BIN)/tiny,--add $(g):/bin/bench-$(notdir $(g))) \
	  $(foreach f,$(ROOTFS_FILES),--add $(f):/$(patsubst user/rootfs/%,%,$(f)))

# The scripted shell session (user/shell/session.toml) on the host Linux (busybox on a pty: the
# expected answers are Linux's) and then on our kernel at -smp SHELL_TEST_SMP, typed into its
# serial console. SHELL_TEST_ARGS: more options, e.g. --only echo --only pipeline, or
# --append "init=/bin/busybox -- sh" to start the shell without /init.
SHELL_TEST_SMP ?= $(KTEST_SMP)
SHELL_TEST_ARGS ?=
shell-test: host-deps user-programs $(INITRAMFS) kernel
	$(call banner,the shell session: busybox sh on the host Linux$(comma) then on our kernel at -smp $(SHELL_TEST_SMP) (accel $(ACCEL_USED)))
	cargo run -q -p user-oracle -- shell --host --kernel $(KERNEL_ELF) --initramfs $(INITRAMFS) --smp $(SHELL_TEST_SMP) \
	  --accel $(ACCEL_USED) $(SHELL_TEST_ARGS)

user: $(INITRAMFS)

user-oracle: user-programs
	$(call banner,user programs on the host Linux: the oracle)
	cargo run -q -p user-oracle -- run $(ORACLE_ARGS)

# One boot per program and CPU count, the program as init; serial logs in target/user/logs/.
user-kernel: host-deps user-oracle $(INITRAMFS) kernel
	$(call banner,user programs in the kernel (accel $(ACCEL_USED)$(comma) -cpu $(USER_KERNEL_CPU)): compared with Linux)
	cargo run -q -p user-oracle -- kernel --kernel $(KERNEL_ELF) --initramfs $(INITRAMFS) --smp $(USER_KERNEL_SMP) \
	  --accel $(ACCEL_USED) --cpu $(USER_KERNEL_CPU) --timeout $(USER_KERNEL_TIMEOUT) $(USER_KERNEL_ARGS)

# ---- the two-guest benchmark ---------------------------------------------------------------------
#
# user/bench/NAME.c: one static musl binary per program, the same bytes for both guests; tiny.c is
# built without libc. The Linux guest is Debian's linux-image-amd64, fetched at bench time with
# `apt-get download` (the meta package and the versioned image it depends on) and unpacked with
# dpkg-deb into target/linux-guest: vmlinuz, System.map (the interrupt entry points the counter
# needs), and the package version. Never committed.

# GUEST_BIN and GUEST_PROGRAMS are defined with the user programs (the initramfs lists them).
LINUX_GUEST := target/linux-guest

$(GUEST_BIN)/tiny: user/bench/tiny.c
	@mkdir -p $(GUEST_BIN)
	$(USER_CC) -static -nostdlib -O2 -Wall -Wextra -Werror $< -o $@

$(GUEST_BIN)/%: user/bench/%.c user/bench/gb.h user/include/ut.h user/include/marker.h | $(USER_INC)
	@mkdir -p $(GUEST_BIN)
	$(USER_CC) $(USER_CFLAGS) -Iuser/bench $< -o $@

guest-programs: $(GUEST_PROGRAMS) $(GUEST_BIN)/tiny

# Succeeds without a kernel when the download fails: the runner then says so and skips Linux.
linux-guest:
	@if [ -s $(LINUX_GUEST)/vmlinuz ] && [ -s $(LINUX_GUEST)/System.map ]; then exit 0; fi; \
	rm -rf $(LINUX_GUEST); mkdir -p $(LINUX_GUEST)/debs $(LINUX_GUEST)/root; \
	cd $(LINUX_GUEST)/debs; \
	if ! apt-get download -qq linux-image-amd64 </dev/null 2>download.log; then \
	  echo "linux-guest: apt-get download linux-image-amd64 failed: $$(tail -n 1 download.log)"; exit 0; fi; \
	image=$$(dpkg-deb -f linux-image-amd64_*.deb Depends | tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ ]*-amd64\).*/\1/p' | head -n 1); \
	if [ -z "$$image" ] || ! apt-get download -qq "$$image" </dev/null 2>>download.log; then \
	  echo "linux-guest: could not download the image linux-image-amd64 depends on ($$image): $$(tail -n 1 download.log)"; exit 0; fi; \
	dpkg-deb -x "$$image"_*.deb ../root; \
	cp ../root/boot/vmlinuz-* ../vmlinuz; cp ../root/boot/System.map-* ../System.map; \
	printf '%s %s\n' "$$image" "$$(dpkg-deb -f "$$image"_*.deb Version)" > ../version; \
	cd ..; rm -rf root debs; echo "linux-guest: $$(cat version) in $(LINUX_GUEST)/"

GUESTS_ARGS = --guests --qemu $(QEMU) --bin $(GUEST_BIN) --linux $(LINUX_GUEST) --kernel $(KERNEL_ELF_RELEASE) \
	--cpu-model '$(GUESTS_CPU)' --smp $(GUESTS_SMP) --mem $(GUESTS_MEM)
KERNEL_ELF_RELEASE := target/$(TARGET)/release/kernel

bench-linux: host-deps user-deps rust-deps guest-programs linux-guest
	$(call banner,bench: the same programs on Linux and on this kernel$(comma) in QEMU (TCG$(comma) -cpu $(GUESTS_CPU)$(comma) -smp $(GUESTS_SMP)))
	env -u RUSTFLAGS cargo build -q -p kernel --target $(TARGET) --release
	cargo run --release -p bench -- $(GUESTS_ARGS)

# The smoke run of `make test`: tiny N, checks that both guests ran every program and every count is present.
bench-guests-quick: host-deps user-deps rust-deps guest-programs linux-guest
	$(call banner,bench: the two-guest part on tiny N)
	env -u RUSTFLAGS cargo build -q -p kernel --target $(TARGET) --release
	cargo run --release -p bench -- $(GUESTS_ARGS) --quick
