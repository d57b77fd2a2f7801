# Test stand-in for OpenWrt's /lib/functions/procd.sh (see tests/openwrt/README.md): every
# call prints what procd would be told, one tab-separated line per value.

_procd_out() {
	if [ -n "$PROCD_STUB_OUT" ]; then
		printf '%s\n' "$*" >> "$PROCD_STUB_OUT"
	else
		printf '%s\n' "$*"
	fi
}

procd_open_service() { _procd_out "service	$1"; }
procd_close_service() { _procd_out "end_service"; }
procd_open_instance() { _procd_out "instance	${1:-instance1}"; }
procd_close_instance() { _procd_out "end_instance"; }

procd_set_param() {
	local key="$1" op=set
	shift
	[ $# -gt 0 ] || _procd_out "set	$key"
	for v in "$@"; do
		_procd_out "$op	$key	$v"
		op=append
	done
}

procd_append_param() {
	local key="$1"
	shift
	for v in "$@"; do _procd_out "append	$key	$v"; done
}

procd_add_reload_trigger() { _procd_out "reload_trigger	$*"; }
procd_add_validation() { _procd_out "validation	$1"; }
procd_add_interface_trigger() {
	local event="$1" iface="$2"
	shift 2
	_procd_out "interface_trigger	$event	$iface	$*"
}
