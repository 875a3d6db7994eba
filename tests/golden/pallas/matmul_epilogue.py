# block0 stays with XLA: dot_general: XLA's GEMM is faster than a generated loop nest


def block1_body(in0_ref, in1_ref, out0_ref):
    # out0[i1_0 + r0*16] = mul(add(in1[i1_0 + r0*16], in0[i1_0]), mul(0.5, add(1.0...  for rows, i1_0<16
    r = pl.program_id(0) * 128 + lax.broadcasted_iota(jnp.int32, (128,), 0)
    v0 = plgpu.load(in1_ref.at[r])
    v1 = plgpu.load(in0_ref.at[lax.rem(r, 16)])
    v2 = lax.add(v0, v1)
    v3 = lax.mul(v2, v2)
    v4 = lax.mul(v2, v3)
    v5 = lax.mul(np.float32(0.044714998453855515), v4)
    v6 = lax.add(v2, v5)
    v7 = lax.mul(np.float32(0.7978845834732056), v6)
    v8 = lax.tanh(v7)
    v9 = lax.add(np.float32(1.0), v8)
    v10 = lax.mul(np.float32(0.5), v9)
    v11 = lax.mul(v2, v10)
    plgpu.store(out0_ref.at[r], v11)


def block1(in0, in1):
    outs = pl.pallas_call(
        block1_body,
        grid=(1,),  # 128 of 128 points (r0<8, i1_0<16) per program
        in_specs=[pl.BlockSpec((16,), lambda g: (0,)), pl.BlockSpec((128,), lambda g: (0,))],
        out_specs=[pl.BlockSpec((128,), lambda g: (0,))],
        out_shape=[jax.ShapeDtypeStruct((128,), jnp.float32)],
        compiler_params=plgpu.CompilerParams(num_warps=4),
        interpret=INTERPRET,
    )(in0.reshape(16), in1.reshape(128))
    return [outs[0].reshape(8, 16)]
