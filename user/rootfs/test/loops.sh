# A script with loops over the text tools, typed as `sh test/loops.sh` from / (in the kernel) or
# from user/rootfs (on the host): the same lines on Linux and on this kernel.
d=/tmp/loops.$$
mkdir -p $d/a/b
i=1
while [ $i -le 20 ]; do
	echo "line $i $((i * i))" >> $d/a/numbers.txt
	i=$((i + 1))
done
for w in alpha beta gamma delta epsilon; do
	echo "$w" > $d/a/b/$w.word
done
echo "lines: $(wc -l < $d/a/numbers.txt)"
echo "with a 1: $(grep -c 1 $d/a/numbers.txt)"
echo "sum of squares: $(awk '{ s += $3 } END { print s }' $d/a/numbers.txt)"
echo "teens: $(sed -n 's/^line \(1[0-9]\) .*/n\1/p' $d/a/numbers.txt | tr '\n' ' ')"
echo "words: $(find $d -name '*.word' | sort | xargs cat | tr '\n' ' ')"
echo "files: $(find $d -type f | wc -l)"
n=0
for f in $(find $d -name '*.word' | sort); do
	case $(cat $f) in
	*a) n=$((n + 1)) ;;
	esac
done
echo "ending in a: $n"
rm -r $d
echo "loops done"
