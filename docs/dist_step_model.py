#!/usr/bin/env python3
"""Step-time model of data-parallel ResNet-50 training (docs/DISTRIBUTED.md): ring all-reduce
of gradient buckets, started as backward produces them and run one after another, overlapping
the rest of backward. Prints the table of the page; change the assumptions below."""

GRAD_BYTES = 25_557_032 * 4  # ResNet-50 parameters, fp32 gradients
T_FWD, T_BWD, T_OPT = 28e-3, 57e-3, 1e-3  # s per step, 256 images per GPU (H100, bf16)
BUCKET = 25 * 2**20  # bytes (nnx default, NNX_BUCKET_MB=25)

# (ranks, bus bandwidth per GPU in bytes/s, latency per ring step in s)
SYSTEMS = [
    (8, 360e9, 3e-6),  # one node, NVLink/NVSwitch
    (64, 45e9, 8e-6),  # 8 nodes, 8 x 400 Gb/s InfiniBand per node
    (512, 45e9, 8e-6),  # 64 nodes, same network
]


def step_time(n, bandwidth, alpha, bucket=BUCKET):
    sizes = []
    left = GRAD_BYTES
    while left > 0:
        sizes.append(min(bucket, left))
        left -= sizes[-1]
    produced, comm_end, comm_total = 0, 0.0, 0.0
    for size in sizes:
        produced += size
        ready = T_BWD * produced / GRAD_BYTES  # gradients come out evenly over backward
        cost = 2 * (n - 1) * alpha + 2 * (n - 1) / n * size / bandwidth
        comm_end = max(ready, comm_end) + cost
        comm_total += cost
    step = T_FWD + max(T_BWD, comm_end) + T_OPT
    return step, comm_total, len(sizes)


def main():
    compute = T_FWD + T_BWD + T_OPT
    print("| GPUs | all-reduce per step | buckets | step | exposed comm | efficiency | images/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, bw, alpha in SYSTEMS:
        step, comm, k = step_time(n, bw, alpha)
        print(f"| {n} | {comm * 1e3:.1f} ms | {k} | {step * 1e3:.1f} ms | "
              f"{(step - compute) * 1e3:.1f} ms | {compute / step * 100:.1f}% | "
              f"{n * 256 / step:,.0f} |")
    for mb in (100,):
        step, comm, k = step_time(512, 45e9, 8e-6, mb * 2**20)
        print(f"512 GPUs with {mb} MB buckets: step {step * 1e3:.1f} ms, "
              f"efficiency {compute / step * 100:.1f}%")


if __name__ == "__main__":
    main()
