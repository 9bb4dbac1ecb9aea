#!/bin/sh
# .debian/build.sh ROOT VERSION MAINTAINER OUTDIR - turns ROOT, a staging tree
# that `make install PREFIX=/usr DESTDIR=ROOT` filled, into
# OUTDIR/kroute_VERSION_ARCH.deb (`make deb` runs it): strips the ELF files,
# compresses the manual page,
# adds the systemd unit (examples/systemd/kroute.service with /usr/bin paths),
# /etc/default/kroute, /etc/kroute/routes/README, the copyright file and
# DEBIAN/ (control with the Depends dpkg-shlibdeps computes, conffiles,
# md5sums, maintainer scripts), then runs dpkg-deb. Prints the .deb's path.
set -eu
[ $# -eq 4 ] || { echo "usage: $0 ROOT VERSION MAINTAINER OUTDIR" >&2; exit 2; }
root=$1 version=$2 maintainer=$3 out=$4
here=$(cd "$(dirname "$0")" && pwd)
arch=$(dpkg --print-architecture)
bin="$root/usr/bin/kroute"
so="$root/usr/lib/kroute/lua/kroute/native.so"
for f in "$bin" "$so"; do
    [ -f "$f" ] || { echo "build.sh: $f missing: not a make install tree" >&2; exit 1; }
done

# the package ships no debug symbols (no -dbgsym package)
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$bin" "$so"
gzip -9nf "$root/usr/share/man/man1/kroute.1"

unit="$root/lib/systemd/system/kroute.service"
install -d "$root/lib/systemd/system" "$root/etc/default" "$root/etc/kroute/routes" \
    "$root/usr/share/doc/kroute" "$root/DEBIAN"
sed 's#/usr/local/bin/#/usr/bin/#g' "$here/../examples/systemd/kroute.service" >"$unit"
if grep -q /usr/local "$unit" || ! grep -q '^ExecReload=' "$unit"; then
    echo "build.sh: $unit: still names /usr/local, or has no ExecReload" >&2
    exit 1
fi
chmod 644 "$unit"
install -m 644 "$here/default" "$root/etc/default/kroute"
install -m 644 "$here/routes-README" "$root/etc/kroute/routes/README"
install -m 644 "$here/copyright" "$root/usr/share/doc/kroute/copyright"
ln -sfn ../../kroute/examples "$root/usr/share/doc/kroute/examples"
for s in postinst prerm postrm; do
    install -m 755 "$here/$s" "$root/DEBIAN/$s"
done
# every file under /etc is a conffile: dpkg keeps the admin's edits
(cd "$root" && find etc -type f | sort | sed 's#^#/#') >"$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's#^\./##' | sort |
    xargs md5sum) >"$root/DEBIAN/md5sums"
find "$root" -type d -exec chmod 755 {} +

# Depends: the shared libraries the ELF files link, as dpkg-shlibdeps finds
# them (it wants a debian/control, so it runs in a scratch source tree);
# native.so's Lua symbols come from the lua5.4 that loads it, hence the
# warnings are not shown. Without dpkg-dev, the list for Debian 12.
libs=""
if command -v dpkg-shlibdeps >/dev/null; then
    src="$out/shlibdeps"
    rm -rf "$src"
    mkdir -p "$src/debian"
    printf 'Source: kroute\n\nPackage: kroute\nArchitecture: any\n' >"$src/debian/control"
    abs=$(cd "$root" && pwd)
    libs=$(cd "$src" && dpkg-shlibdeps -O --warnings=0 "$abs/usr/bin/kroute" \
        "$abs/usr/lib/kroute/lua/kroute/native.so" | sed -n 's/^shlibs:Depends=//p')
    rm -rf "$src"
fi
[ -n "$libs" ] || libs="libc6 (>= 2.34), liblua5.4-0 (>= 5.4.0), librdkafka1 (>= 2.0.2), libyaml-0-2, libmicrohttpd12 (>= 0.9.76)"
depends="adduser, passwd, $libs"

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@MAINTAINER@/$maintainer/" \
    -e "s/@SIZE@/$size/" -e "s/@DEPENDS@/$depends/" "$here/control.in" >"$root/DEBIAN/control"

deb="$out/kroute_${version}_${arch}.deb"
dpkg-deb --build --root-owner-group "$root" "$deb" >/dev/null
echo "$deb"
