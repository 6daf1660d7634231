/*
 * accel.h: choosing QEMU's accelerator.
 */
#ifndef VMCGI_ACCEL_H
#define VMCGI_ACCEL_H

#include <stddef.h>

#include "config.h"

/*
 * Resolve want to "kvm" or "tcg".  For ACCEL_AUTO, KVM is taken only when
 * a tiny guest loop runs at hardware speed; some hosts expose a /dev/kvm
 * that emulates guest code thousands of times slower, where QEMU with KVM
 * never finishes booting.  The probe runs in a child that is killed at its
 * deadline, so it never hangs.  why receives the reason, for the log.
 * Returns NULL if want is ACCEL_KVM and KVM is unusable.
 */
const char	*accel_choose(enum accel_kind want, char *why, size_t whylen);

/*
 * The host's TSC rate in kHz, rounded to whole MHz so that the template's
 * snapshot stamp does not change with measurement noise.  Under TCG the
 * guest's TSC is the host's, and the guest kernel's own calibration
 * against the PIT fails now and then on a busy host and hangs its boot;
 * passing the rate (tsc_early_khz=) skips it.  Blocks about 50 ms.
 * Returns 0 if it cannot tell.
 */
unsigned long	accel_tsc_khz(void);

#endif /* VMCGI_ACCEL_H */
