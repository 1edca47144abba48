#!/usr/bin/env bash
# Spark 4 needs Java 17 or newer; say so plainly before anything starts.
set -euo pipefail
java_bin="${JAVA_HOME:+$JAVA_HOME/bin/}java"
fix="Install a JDK/JRE 17+ (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or point JAVA_HOME at one."
if ! command -v "$java_bin" >/dev/null 2>&1; then
  echo "error: Java not found. Spark 4 needs Java 17+. $fix" >&2
  exit 1
fi
version=$("$java_bin" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
major=${version%%.*}
[ "$major" = "1" ] && major=$(echo "$version" | cut -d. -f2)
if ! [ "$major" -ge 17 ] 2>/dev/null; then
  echo "error: Java $version found at $(command -v "$java_bin"); Spark 4 needs Java 17+. $fix" >&2
  exit 1
fi
