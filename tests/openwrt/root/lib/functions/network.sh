# Test stand-in for OpenWrt's /lib/functions/network.sh (see tests/openwrt/README.md).

# network_get_device VAR NETWORK: the device of a network that is up, from $NETWORK_DEVICES
# ("lan=br-lan wan=eth1"); fails (VAR empty) for a network that is not listed.
network_get_device() {
	local pair
	eval "$1="
	for pair in $NETWORK_DEVICES; do
		if [ "${pair%%=*}" = "$2" ]; then
			eval "$1=\${pair#*=}"
			return 0
		fi
	done
	return 1
}
