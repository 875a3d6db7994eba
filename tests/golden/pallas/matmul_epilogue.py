# block0 stays with XLA: dot_general: XLA's GEMM is faster than a generated loop nest


def block1_body(in0_ref, in1_ref, out0_ref):
    in0 = in0_ref[...]
    in1 = in1_ref[...]
    # out0[i1_0 + r0*16] = mul(add(in1[i1_0 + r0*16], in0[i1_0]), mul(0.5, add(1.0...  for rows, i1_0<16
    v0 = in0.reshape(1, 16)
    v1 = lax.add(in1, v0)
    v2 = lax.mul(v1, v1)
    v3 = lax.mul(v1, v2)
    v4 = lax.mul(np.float32(0.044714998453855515), v3)
    v5 = lax.add(v1, v4)
    v6 = lax.mul(np.float32(0.7978845834732056), v5)
    v7 = lax.tanh(v6)
    v8 = lax.add(np.float32(1.0), v7)
    v9 = lax.mul(np.float32(0.5), v8)
    v10 = lax.mul(v1, v9)
    out0_ref[...] = v10


def block1(in0, in1):
    outs = pl.pallas_call(
        block1_body,
        grid=(1,),  # 8 rows per step
        in_specs=[pl.BlockSpec((16,), lambda g: (0,)), pl.BlockSpec((8, 16), lambda g: (g, 0))],
        out_specs=[pl.BlockSpec((8, 16), lambda g: (g, 0))],
        out_shape=[jax.ShapeDtypeStruct((8, 16), jnp.float32)],
        interpret=INTERPRET,
    )(in0.reshape(16), in1.reshape(8, 16))
    return [outs[0].reshape(8, 16)]
