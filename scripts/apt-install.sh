# Sourced by the setup scripts: `apt_install WHO PACKAGE...` installs, as root, those of the
# Debian packages that are missing (WHO names the caller in its messages). Downloads go to a
# private directory, so other apt users on the machine keep their cache lock.
apt_install() {
  local who=$1 p debs
  shift
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "$who: apt packages present"
    return 0
  fi
  echo "$who: installing ${missing[*]}"
  debs=$(mktemp -d)
  mkdir -p "$debs/partial"
  chmod 755 "$debs"  # apt downloads as the unprivileged _apt user
  local apt=(apt-get -q -o DPkg::Lock::Timeout=300 -o "Dir::Cache::archives=$debs")
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" update
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "${missing[@]}"
  rm -rf "$debs"
}
