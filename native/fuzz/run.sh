#!/usr/bin/env bash
# Fuzzes peft4j's readers of untrusted files for SECONDS each (default 10):
#   fuzz_safetensors      the safetensors reader (libFuzzer, ASan + UBSan)
#   fuzz_adapter_config   adapter_config.json: read_adapter_config + each method's normalize_config (libFuzzer)
#   jsonl                 the Java JSONL reader, JsonlReaderFuzzTest (Jazzer's driver)
# seeded with the golden parity files and the demo data. The libFuzzer targets build with clang into target/fuzz
# (Debian: clang, libclang-rt-14-dev, libomp-14-dev); the Java one needs the Maven build (target/classes, target/test-classes).
# The corpus grows across runs in target/fuzz/corpus. A finding fails the run and leaves its input as
# target/fuzz/crash-<target>-*: reproduce with target/fuzz/bin/<target> FILE (or, for jsonl, Jazzer with the file).
#   native/fuzz/run.sh [SECONDS]
set -euo pipefail

ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)
SECONDS_EACH=${1:-10}
BUILD="$ROOT/target/fuzz"
log() { echo "fuzz: $*" >&2; }

mkdir -p "$BUILD"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DPEFT4J_FUZZ=ON -DPEFT4J_BUILD_TESTS=OFF > "$BUILD/configure.log"
log "building the libFuzzer targets (log: target/fuzz/build.log)"
if ! cmake --build "$BUILD" -j "${PEFT4J_FUZZ_JOBS:-2}" > "$BUILD/build.log" 2>&1; then
  tail -30 "$BUILD/build.log" >&2
  exit 1
fi

seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
mkdir -p "$seeds/fuzz_safetensors" "$seeds/fuzz_adapter_config" "$seeds/jsonl"
find "$ROOT/python-parity/golden" -name '*.safetensors' -size -16k | while read -r f; do
  cp "$f" "$seeds/fuzz_safetensors/$(echo "$f" | md5sum | cut -c1-12)"
done
find "$ROOT/python-parity/golden" -name adapter_config.json | while read -r f; do
  cp "$f" "$seeds/fuzz_adapter_config/$(echo "$f" | md5sum | cut -c1-12)"
done
for f in "$ROOT"/demo/data/*.jsonl; do head -c 2000 "$f" > "$seeds/jsonl/$(basename "$f")"; done

status=0
for target in fuzz_safetensors fuzz_adapter_config; do
  corpus="$BUILD/corpus/$target"
  mkdir -p "$corpus"
  log "$target for ${SECONDS_EACH} s"
  # Leak checks stay off: libtorch keeps allocations for the process's lifetime by design.
  if ! ASAN_OPTIONS=detect_leaks=0 "$BUILD/bin/$target" -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
      -dict="$ROOT/native/fuzz/${target#fuzz_}.dict" -artifact_prefix="$BUILD/crash-$target-" \
      "$corpus" "$seeds/$target" > "$BUILD/$target.log" 2>&1; then
    tail -40 "$BUILD/$target.log" >&2
    status=1
  fi
  grep -E "^stat::(number_of_executed_units|new_units_added)" "$BUILD/$target.log" | tr '\n' ' ' >&2; echo >&2
done

# Jazzer spends about 15 s starting (instrumenting Jackson and peft4j) before its first input: added to the time.
log "jsonl (Java JSONL reader, Jazzer) for ${SECONDS_EACH} s after its start-up"
(cd "$ROOT" && mvn -B -q -o dependency:build-classpath -Dmdep.includeScope=test -Dmdep.outputFile="$BUILD/classpath.txt" > /dev/null)
corpus="$BUILD/corpus/jsonl"
mkdir -p "$corpus"
if ! (cd "$BUILD" && java -Xmx1g -cp "$ROOT/target/test-classes:$ROOT/target/classes:$(cat "$BUILD/classpath.txt")" \
    com.code_intelligence.jazzer.Jazzer --target_class=org.peft4j.data.JsonlReaderFuzzTest \
    --instrumentation_includes='org.peft4j.**:com.fasterxml.**' -max_total_time=$((SECONDS_EACH + 15)) -print_final_stats=1 \
    -artifact_prefix="$BUILD/crash-jsonl-" "$corpus" "$seeds/jsonl" > "$BUILD/jsonl.log" 2>&1); then
  tail -40 "$BUILD/jsonl.log" >&2
  status=1
fi
grep -E "^stat::(number_of_executed_units|new_units_added)" "$BUILD/jsonl.log" | tr '\n' ' ' >&2; echo >&2
[ "$status" -eq 0 ] && log "no findings" || log "FINDINGS: see target/fuzz/crash-*"
exit "$status"
