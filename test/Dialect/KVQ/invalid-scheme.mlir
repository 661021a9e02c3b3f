// RUN: kvq-opt %s --split-input-file --verify-diagnostics

// expected-error @+1 {{bits must be 2, 4 or 8, got 5}}
func.func private @f() attributes {s = #kvq.scheme<bits = 5, group = 32, axis = token>}

// -----

// expected-error @+1 {{bits must be 2, 4 or 8, got 3}}
func.func private @f() attributes {s = #kvq.scheme<bits = 3, group = 32, axis = token>}

// -----

// expected-error @+1 {{group must be a power of two in [16, 256] or 'head_dim', got 48}}
func.func private @f() attributes {s = #kvq.scheme<bits = 4, group = 48, axis = token>}

// -----

// expected-error @+1 {{group must be a power of two in [16, 256] or 'head_dim', got 512}}
func.func private @f() attributes {s = #kvq.scheme<bits = 4, group = 512, axis = token>}

// -----

// expected-error @+1 {{group must be a power of two in [16, 256] or 'head_dim', got 8}}
func.func private @f() attributes {s = #kvq.scheme<bits = 4, group = 8, axis = channel>}

// -----

// expected-error @+1 {{group must be a power of two in [16, 256] or 'head_dim', got 0}}
func.func private @f() attributes {s = #kvq.scheme<bits = 4, group = 0, axis = channel>}

// -----

// expected-error @+1 {{scale type must be f16 or f32, got 'bf16'}}
func.func private @f() attributes {s = #kvq.scheme<bits = 4, group = 32, axis = token, scale = bf16>}

// -----

// expected-error @+1 {{'axis' must be one of 'token', 'channel', got 'row'}}
func.func private @f() attributes {s = #kvq.scheme<bits = 4, group = 32, axis = row>}

// -----

// expected-error @+1 {{'mode' must be one of 'asymmetric', 'symmetric', got 'affine'}}
func.func private @f() attributes {s = #kvq.scheme<bits = 4, group = 32, axis = token, mode = affine>}

// -----

// expected-error @+1 {{'order' must be one of 'linear', 'interleaved', got 'magic'}}
func.func private @f() attributes {s = #kvq.scheme<bits = 4, group = 32, axis = token, order = magic>}

// -----

// expected-error @+1 {{scheme parameter 'group' given twice}}
func.func private @f() attributes {s = #kvq.scheme<bits = 4, group = 32, group = 64, axis = token>}

// -----

// expected-error @+1 {{unknown scheme parameter 'zero' (expected bits, group, axis, mode, scale, order, format, static)}}
func.func private @f() attributes {s = #kvq.scheme<bits = 4, group = 32, axis = token, zero = f16>}

// -----

// expected-error @+1 {{scheme is missing required parameter 'group'}}
func.func private @f() attributes {s = #kvq.scheme<bits = 4, axis = token>}

// -----

// Static scales are one per tensor or kv head: a group size says otherwise.
// expected-error @+1 {{static scales and FP8 need the token axis, one group per head vector and fp32 scales; FP8 is 8-bit, symmetric and linear}}
func.func private @f() attributes {s = #kvq.scheme<bits = 4, group = 64, axis = token, scale = f32, static = head>}

// -----

// FP8 with scales computed per group is not a format kvq stores.
// expected-error @+1 {{static scales and FP8 need the token axis, one group per head vector and fp32 scales; FP8 is 8-bit, symmetric and linear}}
func.func private @f() attributes {s = #kvq.scheme<bits = 8, group = head_dim, axis = token, mode = symmetric, scale = f32, format = e4m3>}

// -----

// FP8 codes are bytes.
// expected-error @+1 {{static scales and FP8 need the token axis, one group per head vector and fp32 scales; FP8 is 8-bit, symmetric and linear}}
func.func private @f() attributes {s = #kvq.scheme<bits = 4, group = head_dim, axis = token, mode = symmetric, scale = f32, format = e4m3, static = tensor>}

// -----

// expected-error @+1 {{'format' must be one of 'integer', 'e4m3', 'e5m2', got 'e3m4'}}
func.func private @f() attributes {s = #kvq.scheme<bits = 8, group = head_dim, axis = token, format = e3m4>}
