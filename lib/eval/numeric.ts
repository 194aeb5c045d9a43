/**
 * Float64 sums in numpy's order. The protocol's reference (arcface_torch, sklearn) reduces with
 * numpy, whose `add.reduce` over a contiguous float64 run is a pairwise sum: fewer than 8 values
 * added left to right; up to 128 in eight interleaved accumulators combined as
 * ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)) plus the tail; longer runs split at n/2 rounded down to a
 * multiple of 8. Reproducing the order makes means, stds and distances bit-identical to the
 * reference instead of an ulp away (which matters when a distance lands on a threshold).
 */

/** numpy's pairwise sum of a[start .. start + n). */
export function pairwiseSum(a: ArrayLike<number>, start: number, n: number): number {
  if (n < 8) {
    let r = 0;
    for (let i = 0; i < n; i++) r += a[start + i];
    return r;
  }
  if (n <= 128) {
    let r0 = a[start];
    let r1 = a[start + 1];
    let r2 = a[start + 2];
    let r3 = a[start + 3];
    let r4 = a[start + 4];
    let r5 = a[start + 5];
    let r6 = a[start + 6];
    let r7 = a[start + 7];
    const end8 = n - (n % 8);
    let i = 8;
    for (; i < end8; i += 8) {
      const p = start + i;
      r0 += a[p];
      r1 += a[p + 1];
      r2 += a[p + 2];
      r3 += a[p + 3];
      r4 += a[p + 4];
      r5 += a[p + 5];
      r6 += a[p + 6];
      r7 += a[p + 7];
    }
    let res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7));
    for (; i < n; i++) res += a[start + i];
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return pairwiseSum(a, start, n2) + pairwiseSum(a, start + n2, n - n2);
}

/** numpy's sum of an array. */
export function npSum(a: ArrayLike<number>): number {
  return pairwiseSum(a, 0, a.length);
}

/** np.mean (NaN for an empty array). */
export function npMean(a: ArrayLike<number>): number {
  return a.length ? npSum(a) / a.length : NaN;
}

/** np.std: the population standard deviation, sqrt(mean(|x − mean|²)). */
export function npStd(a: ArrayLike<number>): number {
  const m = npMean(a);
  const sq = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) sq[i] = (a[i] - m) * (a[i] - m);
  return Math.sqrt(npMean(sq));
}
