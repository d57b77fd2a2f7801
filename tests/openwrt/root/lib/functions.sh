# Test stand-in for OpenWrt's /lib/functions.sh (see tests/openwrt/README.md).

# config_load PACKAGE: reads $UCI_CONFIG_DIR/PACKAGE into CONFIG_<section>_<option>
# variables (lists space-joined, as OpenWrt's config_get returns them).
config_load() {
	local file="${UCI_CONFIG_DIR:-/etc/config}/$1" kw section="" n=0
	[ -f "$file" ] || return 1
	while read -r kw rest; do
		case "$kw" in
			config)
				eval "set -- $rest"
				n=$((n + 1))
				section="${2:-cfg$n}"
				eval "CONFIG_${section}_TYPE=\$1"
				;;
			option | list)
				eval "set -- $rest"
				[ -n "$section" ] || continue
				if [ "$kw" = list ]; then
					eval "CONFIG_${section}_$1=\"\${CONFIG_${section}_$1:+\$CONFIG_${section}_$1 }\$2\""
				else
					eval "CONFIG_${section}_$1=\$2"
				fi
				;;
		esac
	done < "$file"
}

# config_get VAR SECTION OPTION [DEFAULT]
config_get() {
	eval "$1=\"\${CONFIG_$2_$3:-\$4}\""
}

# config_get_bool VAR SECTION OPTION [DEFAULT]
config_get_bool() {
	local _v
	config_get _v "$2" "$3" "$4"
	case "$_v" in
		1 | on | true | yes | enabled) _v=1 ;;
		*) _v=0 ;;
	esac
	eval "$1=\$_v"
}

uci_validate_section() {
	local _package="$1" _type="$2" _name="$3" _result _error
	shift 3
	_result="$("$IPKG_INSTROOT/sbin/validate_data" "$_package" "$_type" "$_name" "$@")"
	_error=$?
	eval "$_result"
	return $_error
}

# uci_load_validate PACKAGE TYPE SECTION CALLBACK SPEC...: sets one variable per option,
# then calls CALLBACK SECTION RESULT (0 = valid).
uci_load_validate() {
	local _package="$1" _type="$2" _name="$3" _function="$4" _result
	shift 4
	uci_validate_section "$_package" "$_type" "$_name" "$@"
	_result=$?
	[ -n "$_function" ] || return $_result
	"$_function" "$_name" "$_result"
}
