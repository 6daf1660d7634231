/*
 * accel.c: probe /dev/kvm by running a real-mode loop of a million
 * iterations in a throw-away VM.  Hardware virtualization does it in well
 * under a millisecond; an emulated KVM takes over a second.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include "accel.h"

#define ACCEL_PROBE_DEADLINE_MS 500
#define ACCEL_FAST_NS 50000000L		/* 50 ms for 2M instructions */

/* mov ecx, 1000000; 1: dec ecx; jnz 1b; hlt  (16-bit code, 0x66 = 32-bit) */
static const unsigned char accel_loop[] = {
	0x66, 0xb9, 0x40, 0x42, 0x0f, 0x00,
	0x66, 0x49,
	0x75, 0xfc,
	0xf4,
};

enum { PROBE_FAST = 0, PROBE_ERROR = 1, PROBE_SLOW = 2 };

static long
accel_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Runs in the probe child; its exit status is the verdict. */
static int
accel_probe_child(void)
{
	struct kvm_userspace_memory_region region;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_run *run;
	int kvm, vmfd, vcpu, size;
	unsigned char *mem;
	long t0;

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0 || ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
		return PROBE_ERROR;
	vmfd = ioctl(kvm, KVM_CREATE_VM, 0);
	mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (vmfd < 0 || mem == MAP_FAILED)
		return PROBE_ERROR;
	memcpy(mem, accel_loop, sizeof(accel_loop));
	region = (struct kvm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = 0x1000, .memory_size = 0x1000,
		.userspace_addr = (unsigned long)mem,
	};
	if (ioctl(vmfd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		return PROBE_ERROR;
	vcpu = ioctl(vmfd, KVM_CREATE_VCPU, 0);
	size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vcpu < 0 || size <= 0)
		return PROBE_ERROR;
	run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED,
	    vcpu, 0);
	if (run == MAP_FAILED || ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		return PROBE_ERROR;
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	memset(&regs, 0, sizeof(regs));
	regs.rip = 0x1000;
	regs.rflags = 0x2;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0 ||
	    ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		return PROBE_ERROR;
	t0 = accel_ns();
	if (ioctl(vcpu, KVM_RUN, 0) < 0 || run->exit_reason != KVM_EXIT_HLT)
		return PROBE_ERROR;
	return accel_ns() - t0 < ACCEL_FAST_NS ? PROBE_FAST : PROBE_SLOW;
}

/* PROBE_* verdict, or -1 if the child missed its deadline. */
static int
accel_probe(void)
{
	long deadline = accel_ns() + ACCEL_PROBE_DEADLINE_MS * 1000000L;
	int status;
	pid_t pid, r;

	pid = fork();
	if (pid < 0)
		return PROBE_ERROR;
	if (pid == 0)
		_exit(accel_probe_child());
	while ((r = waitpid(pid, &status, WNOHANG)) == 0 &&
	    accel_ns() < deadline)
		usleep(2000);
	if (r == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		return -1;
	}
	if (r < 0 || !WIFEXITED(status))
		return PROBE_ERROR;
	return WEXITSTATUS(status);
}

const char *
accel_choose(enum accel_kind want, char *why, size_t whylen)
{
	int verdict;

	if (want == ACCEL_TCG) {
		snprintf(why, whylen, "configured");
		return "tcg";
	}
	if (access("/dev/kvm", R_OK | W_OK) < 0) {
		snprintf(why, whylen, "/dev/kvm: %s", strerror(errno));
		return want == ACCEL_KVM ? NULL : "tcg";
	}
	if (want == ACCEL_KVM) {
		snprintf(why, whylen, "configured");
		return "kvm";
	}
	verdict = accel_probe();
	if (verdict == PROBE_FAST) {
		snprintf(why, whylen, "/dev/kvm ran the probe loop at "
		    "hardware speed");
		return "kvm";
	}
	if (verdict == PROBE_ERROR)
		snprintf(why, whylen, "/dev/kvm failed the probe");
	else
		snprintf(why, whylen, "/dev/kvm is not hardware-accelerated "
		    "(a 2M-instruction probe took over %s)",
		    verdict < 0 ? "500 ms" : "50 ms");
	return "tcg";
}

static long
accel_raw_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

unsigned long
accel_tsc_khz(void)
{
	unsigned long long c0, c1;
	long t0, t1;

	t0 = accel_raw_ns();
	c0 = __rdtsc();
	usleep(50000);
	t1 = accel_raw_ns();
	c1 = __rdtsc();
	if (t1 <= t0 || c1 <= c0)
		return 0;
	/* cycles per ms, to the nearest 1000 kHz */
	return (unsigned long)(((c1 - c0) * 1000000ULL / (unsigned long long)
	    (t1 - t0) + 500) / 1000 * 1000);
}
