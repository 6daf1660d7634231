#!/bin/sh
#
# mkimage.sh OUTDIR CACHEDIR [AGENT]
#
# Builds OUTDIR/vmlinuz and OUTDIR/initrd.img for the vmcgi guest from
# Debian packages only.  Packages are fetched with apt-get download into
# CACHEDIR and kept there, so a second run downloads nothing.  The agent
# binary is AGENT, or $VMCGI_AGENT, or build/agent.
#
# The initramfs holds busybox, python3.11 with its stdlib (minus tests and
# GUI parts), the shared libraries those need, the four virtio modules the
# Debian cloud kernel builds as modules, /init, the agent and the python3
# zygote the agent starts (guest/zygote.py).

set -eu

GUESTDIR=$(cd "$(dirname "$0")" && pwd)
OUT=${1:?usage: mkimage.sh OUTDIR CACHEDIR [AGENT]}
CACHE=${2:?usage: mkimage.sh OUTDIR CACHEDIR [AGENT]}
AGENT=${3:-${VMCGI_AGENT:-build/agent}}

PYVER=3.11
PYPKGS="python$PYVER-minimal libpython$PYVER-minimal libpython$PYVER-stdlib"
MODULES="virtio_ring virtio virtio_mmio virtio_console"
ARCHLIB=x86_64-linux-gnu

STEP=start
trap 'rc=$?; [ $rc -eq 0 ] || echo "mkimage: failed at step: $STEP" >&2' EXIT

step() {
	STEP=$1
	echo "mkimage: $STEP" >&2
}

die() {
	echo "mkimage: $STEP: $*" >&2
	exit 1
}

# The kernel package is whatever the cloud metapackage depends on today.
kernel_package() {
	pkg=$(apt-cache depends linux-image-cloud-amd64 |
	    sed -n 's/^ *Depends: \(linux-image-[^ ]*-cloud-amd64\)$/\1/p' |
	    head -n 1)
	[ -n "$pkg" ] || die "no linux-image-*-cloud-amd64 in the Depends" \
	    "of linux-image-cloud-amd64 (apt-get update?)"
	echo "$pkg"
}

# First alternative of each Depends/Pre-Depends of the packages given,
# keeping only library packages: the interpreter needs their shared
# objects, not tools such as dpkg or perl that a full closure drags in.
lib_depends() {
	apt-cache show --no-all-versions "$@" |
	    sed -n 's/^\(Pre-\)\{0,1\}Depends: //p' |
	    tr ',' '\n' |
	    sed 's/|.*//; s/(.*)//; s/:any//; s/^ *//; s/ *$//' |
	    grep -E '^(lib|zlib)' | sort -u || true
}

# Closure of lib_depends over the python packages, one apt-cache call per
# level since each call costs a good fraction of a second.
python_packages() {
	seen=" "
	level=$PYPKGS
	while [ -n "$level" ]; do
		new=
		for p in $level; do
			case "$seen" in *" $p "*) continue ;; esac
			seen="$seen$p "
			new="$new $p"
		done
		[ -n "$new" ] || break
		level=$(lib_depends $new)
	done
	echo $seen
}

# Prints the .deb of package $1 at version $2 in CACHE, if there is one.
cached_deb() {
	find "$CACHE" -maxdepth 1 -name "$1_*.deb" | while read -r f; do
		[ "$(dpkg-deb -f "$f" Version)" = "$2" ] && echo "$f"
	done | head -n 1
}

# Downloads package $1 at version $2 into CACHE unless it is there;
# prints the .deb.
fetch() {
	deb=$(cached_deb "$1" "$2")
	if [ -z "$deb" ]; then
		# _apt cannot write CACHE; say so instead of warning each time.
		(cd "$CACHE" && apt-get download -q \
		    -o APT::Sandbox::User=root "$1" >&2) ||
		    die "apt-get download $1 failed"
		deb=$(cached_deb "$1" "$2")
	fi
	[ -n "$deb" ] || die "apt-get download $1: no .deb for $2 in $CACHE"
	echo "$deb"
}

extract() {
	dpkg-deb -x "$1" "$2" || die "dpkg-deb -x $1 failed"
}

# Prints the library names (DT_NEEDED) of ELF file $1, nothing if not ELF.
needed() {
	readelf -d "$1" 2>/dev/null |
	    sed -n 's/.*(NEEDED).*Shared library: \[\(.*\)\]/\1/p'
}

# Copies $1 (relative to STAGE) into ROOT, keeping symlinks and the link
# target, so libfoo.so.1 -> libfoo.so.1.2.3 survives.
copy_rel() {
	src=$1
	while :; do
		mkdir -p "$ROOT/$(dirname "$src")"
		cp -a "$STAGE/$src" "$ROOT/$src"
		[ -L "$STAGE/$src" ] || break
		t=$(readlink "$STAGE/$src")
		case "$t" in
		/*) src=${t#/} ;;
		*) src=$(dirname "$src")/$t ;;
		esac
	done
}

find_lib() {
	for d in lib/$ARCHLIB usr/lib/$ARCHLIB lib64 lib usr/lib; do
		if [ -e "$STAGE/$d/$1" ]; then
			echo "$d/$1"
			return 0
		fi
	done
	return 1
}

# Walks DT_NEEDED from every ELF file under ROOT and copies each library
# from the extracted packages; a library no package supplied is an error,
# since the host's own copies must never leak into the image.
copy_libs() {
	done_libs=" "
	while :; do
		missing=
		for f in $(find "$ROOT" -type f \
		    \( -perm -u+x -o -name '*.so*' \)); do
			for l in $(needed "$f"); do
				case "$done_libs" in *" $l "*) continue ;; esac
				missing="$missing $l"
			done
		done
		missing=$(echo $missing | tr ' ' '\n' | sort -u)
		[ -n "$missing" ] || break
		for l in $missing; do
			rel=$(find_lib "$l") ||
			    die "shared library $l: in no extracted package"
			copy_rel "$rel"
			done_libs="$done_libs$l "
		done
	done
}

step "check tools"
for t in apt-get apt-cache dpkg-deb readelf cpio; do
	command -v $t >/dev/null || die "$t not found"
done
[ -x "$AGENT" ] || die "agent binary '$AGENT' missing (build it first)"
readelf -d "$AGENT" 2>/dev/null | grep -q NEEDED &&
    die "agent '$AGENT' is dynamically linked; build with gcc -static"

mkdir -p "$OUT" "$CACHE"
OUT=$(cd "$OUT" && pwd)
CACHE=$(cd "$CACHE" && pwd)
STAGE=$OUT/stage
ROOT=$OUT/root
rm -rf "$STAGE" "$ROOT"
mkdir -p "$STAGE" "$ROOT"

step "resolve packages"
KPKG=$(kernel_package)
KVER=${KPKG#linux-image-}
PKGS=$(python_packages)
echo "mkimage: kernel $KPKG; python: $PKGS" >&2

step "download packages"
apt-cache show --no-all-versions "$KPKG" busybox-static $PKGS |
    sed -n 's/^Package: //p; s/^Version: //p' | paste - - >"$OUT/versions"
for p in "$KPKG" busybox-static $PKGS; do
	v=$(awk -v p="$p" '$1 == p { print $2 }' "$OUT/versions")
	[ -n "$v" ] || die "apt-cache show $p: no candidate version"
	extract "$(fetch "$p" "$v")" "$STAGE"
done

step "kernel"
[ -f "$STAGE/boot/vmlinuz-$KVER" ] || die "no /boot/vmlinuz-$KVER in $KPKG"
CONFIG=$STAGE/boot/config-$KVER
if grep -q '^CONFIG_RD_ZSTD=y' "$CONFIG" &&
    command -v zstd >/dev/null; then
	COMPRESS="zstd -q -15 -T0"
elif grep -q '^CONFIG_RD_GZIP=y' "$CONFIG"; then
	COMPRESS="gzip -9"
else
	die "kernel decompresses neither zstd nor gzip initramfs"
fi

step "busybox"
mkdir -p "$ROOT/bin" "$ROOT/sbin" "$ROOT/usr/bin" "$ROOT/usr/sbin"
cp "$STAGE/bin/busybox" "$ROOT/bin/busybox"
for a in $("$ROOT/bin/busybox" --list-full); do
	[ -e "$ROOT/$a" ] || ln -s /bin/busybox "$ROOT/$a"
done

step "modules"
MODDIR=$STAGE/lib/modules/$KVER/kernel
mkdir -p "$ROOT/lib/modules"
for m in $MODULES; do
	f=$(find "$MODDIR" -name "$m.ko" -o -name "$m.ko.xz" | head -n 1)
	[ -n "$f" ] || die "module $m not found under $MODDIR"
	cp "$f" "$ROOT/lib/modules/"
done

step "python"
cp -a "$STAGE/usr/bin/python$PYVER" "$ROOT/usr/bin/"
ln -s "python$PYVER" "$ROOT/usr/bin/python3"
mkdir -p "$ROOT/usr/lib"
cp -a "$STAGE/usr/lib/python$PYVER" "$ROOT/usr/lib/"
for d in test idlelib tkinter turtledemo ensurepip lib2to3/tests \
    unittest/test ctypes/test sqlite3/test distutils/tests; do
	rm -rf "$ROOT/usr/lib/python$PYVER/$d"
done
rm -f "$ROOT/usr/lib/python$PYVER/lib-dynload/_tkinter"*

step "shared libraries"
copy_libs
[ -e "$ROOT/lib64/ld-linux-x86-64.so.2" ] || {
	copy_rel "$(find_lib ld-linux-x86-64.so.2)" ||
	    die "ld-linux-x86-64.so.2: in no extracted package"
	mkdir -p "$ROOT/lib64"
	[ -e "$ROOT/lib64/ld-linux-x86-64.so.2" ] ||
	    ln -s "/lib/$ARCHLIB/ld-linux-x86-64.so.2" "$ROOT/lib64/"
}

# The zygote the agent starts in the template (src/agent/zygote.c).
step "zygote"
mkdir -p "$ROOT/usr/lib/vmcgi"
cp "$GUESTDIR/zygote.py" "$ROOT/usr/lib/vmcgi/zygote.py"
chmod 0644 "$ROOT/usr/lib/vmcgi/zygote.py"

# Debian ships no bytecode and compiles it in postinst; the guest's stdlib
# is root-owned and the handler cannot write it, so without this every run
# would compile json and friends afresh, which costs seconds under TCG.
# The guest's own interpreter does it, through the extracted loader.
step "compile python bytecode"
LD=$(find "$ROOT" -name 'ld-linux-x86-64.so.2' -type f | head -n 1)
"$LD" --library-path "$ROOT/lib/$ARCHLIB:$ROOT/usr/lib/$ARCHLIB" \
    "$ROOT/usr/bin/python$PYVER" -I -c "
import compileall, sys
ok = True
for d in sys.argv[2:]:
    ok = compileall.compile_dir(d, quiet=1, workers=0,
        stripdir=sys.argv[1], prependdir='/') and ok
sys.exit(0 if ok else 1)" \
    "$ROOT" "$ROOT/usr/lib/python$PYVER" "$ROOT/usr/lib/vmcgi" >/dev/null ||
    die "compileall with the guest's python$PYVER failed"

step "users and /init"
mkdir -p "$ROOT/etc" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev" "$ROOT/tmp" \
    "$ROOT/run" "$ROOT/root"
chmod 1777 "$ROOT/tmp"
cat >"$ROOT/etc/passwd" <<EOF
root:x:0:0:root:/root:/bin/sh
handler:x:1000:1000:vmcgi handler:/tmp:/bin/sh
EOF
cat >"$ROOT/etc/group" <<EOF
root:x:0:
handler:x:1000:
EOF
cp "$GUESTDIR/init" "$ROOT/init"
chmod 0755 "$ROOT/init"
cp "$AGENT" "$ROOT/sbin/vmcgi-agent"
chmod 0755 "$ROOT/sbin/vmcgi-agent"

step "smoke test"
"$LD" --library-path "$ROOT/lib/$ARCHLIB:$ROOT/usr/lib/$ARCHLIB" \
    "$ROOT/usr/bin/python$PYVER" -I -c 'import json, hashlib, ssl, sqlite3' ||
    die "python$PYVER in the image cannot import its stdlib"

step "cpio"
(cd "$ROOT" && find . | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --quiet) | $COMPRESS >"$OUT/initrd.img.tmp" ||
    die "cpio | $COMPRESS failed"
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
cp "$STAGE/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
echo "$KVER" >"$OUT/kernel.version"

step "done"
echo "mkimage: vmlinuz $(wc -c <"$OUT/vmlinuz") bytes," \
    "initrd.img $(wc -c <"$OUT/initrd.img") bytes," \
    "root $(du -sk "$ROOT" | cut -f1) KB unpacked"
