#!/bin/sh
# run.sh BUILD SECONDS NAME...: run each harness BUILD/fuzz/fuzz_NAME for
# SECONDS, starting from the committed seeds in tests/fuzz/corpus/NAME and
# what earlier runs found (BUILD/fuzz/NAME/corpus).  Prints one summary
# line per harness and fails if any found a crash, leak or sanitizer
# report; its input is left as BUILD/fuzz/NAME/crash-* (or leak-*, ...).
set -u
BUILD=$1
SECS=$2
shift 2
failed=
for name in "$@"; do
	bin=$BUILD/fuzz/fuzz_$name
	out=$BUILD/fuzz/$name
	mkdir -p "$out/corpus"
	# Longest input per harness: a FastCGI connection has to fit one
	# socket buffer; channel streams hold a few full messages.
	case $name in
	fcgi)		max=65536 ;;
	chan|agent)	max=262144 ;;
	config)		max=16384 ;;
	*)		max=4096 ;;
	esac
	"$bin" -max_total_time="$SECS" -max_len="$max" -timeout=10 \
	    -rss_limit_mb=4096 -print_final_stats=1 \
	    -artifact_prefix="$out/" "$out/corpus" "tests/fuzz/corpus/$name" \
	    >"$out/log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log")
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out/log")
	cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$out/log" | tail -n 1)
	corp=$(ls "$out/corpus" | wc -l)
	if [ "$rc" -eq 0 ]; then
		echo "fuzz $name: ${execs:-?} runs, ${rate:-?}/s, $cov," \
		    "corpus $corp: ok"
	else
		echo "fuzz $name: FAILED (exit $rc), ${execs:-?} runs, $cov;" \
		    "see $out/log"
		grep -E '^(==[0-9]+==ERROR|SUMMARY|artifact_prefix)' \
		    "$out/log" | head -n 5
		failed="$failed $name"
	fi
done
if [ -n "$failed" ]; then
	echo "fuzz: FAILED:$failed"
	exit 1
fi
echo "fuzz: all $# harnesses ran clean"
