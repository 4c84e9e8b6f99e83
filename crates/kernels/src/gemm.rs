//! The one way into the `gemm` crate: strided matrix views that are checked against their
//! slices when they are made, and [`sgemm`], which checks the views' shapes against each other.
//! `gemm::gemm` takes 19 raw arguments and trusts every pointer and stride; here safe code
//! cannot reach past a slice, and a destination view never has two elements at one address.
//! (`gemm` picks its own micro-kernels at run time; `SIMCASE_KERNELS` does not steer it.)
//! The one other way, `crate::packed_f32`, calls `gemm`'s AVX2 micro-kernels on weights packed
//! once, through the same views ([`RawView`]).

use crate::error::{check, KernelError};
use std::marker::PhantomData;
use std::mem::MaybeUninit;

/// Offset of the last element of a `rows × cols` view, or `None` when the view is empty;
/// `Err` on overflow.
fn last_offset(
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
) -> Result<Option<usize>, KernelError> {
    if rows == 0 || cols == 0 {
        return Ok(None);
    }
    let off = (rows - 1)
        .checked_mul(rs)
        .and_then(|a| (cols - 1).checked_mul(cs).and_then(|b| a.checked_add(b)))
        .filter(|&o| o <= isize::MAX as usize);
    off.map(Some).ok_or_else(|| {
        KernelError(format!(
            "matrix {rows}×{cols} with strides ({rs}, {cs}) overflows"
        ))
    })
}

fn check_view(
    len: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
) -> Result<(), KernelError> {
    check(
        rs <= isize::MAX as usize && cs <= isize::MAX as usize,
        || format!("matrix strides ({rs}, {cs}) are too large"),
    )?;
    if let Some(last) = last_offset(rows, cols, rs, cs)? {
        check(last < len, || {
            format!("matrix {rows}×{cols} with strides ({rs}, {cs}) needs {} values, the slice has {len}", last + 1)
        })?;
    }
    Ok(())
}

/// Whether distinct `(i, j)` of a `rows × cols` view map to distinct offsets: the inner stride
/// is at least 1 and the outer one steps over a whole inner line.
fn injective(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows <= 1 && cols <= 1 {
        return true;
    }
    if rows <= 1 {
        return cs >= 1;
    }
    if cols <= 1 {
        return rs >= 1;
    }
    (cs >= 1 && rs >= cs.saturating_mul(cols)) || (rs >= 1 && cs >= rs.saturating_mul(rows))
}

/// A view's pointer, shape and strides, for the crate's own calls into `gemm`'s micro-kernels
/// (`crate::packed_f32`), which rely on the checks made when the view was.
pub(crate) struct RawView<P> {
    pub(crate) ptr: P,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

/// A read-only `rows × cols` view of an f32 slice: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    ptr: *const f32,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    _data: PhantomData<&'a [f32]>,
}

// SAFETY: a MatRef is a shared borrow of f32s (like `&[f32]`, which is Send and Sync).
unsafe impl Send for MatRef<'_> {}
// SAFETY: as above.
unsafe impl Sync for MatRef<'_> {}

impl<'a> MatRef<'a> {
    /// A strided view; `Err` unless every element lies inside `data`.
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self, KernelError> {
        check_view(data.len(), rows, cols, row_stride, col_stride)?;
        Ok(Self {
            ptr: data.as_ptr(),
            rows,
            cols,
            rs: row_stride,
            cs: col_stride,
            _data: PhantomData,
        })
    }

    /// A dense row-major view of the first `rows·cols` values.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self, KernelError> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The pointer, shape and strides.
    pub(crate) fn raw(&self) -> RawView<*const f32> {
        RawView {
            ptr: self.ptr,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
        }
    }
}

/// A writable `rows × cols` view of an f32 slice whose elements are all distinct: element
/// `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Debug)]
pub struct MatMut<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    _data: PhantomData<&'a mut [f32]>,
}

// SAFETY: a MatMut is an exclusive borrow of distinct f32s (like `&mut [f32]`, which is Send
// and Sync); splitting one yields views over disjoint elements.
unsafe impl Send for MatMut<'_> {}
// SAFETY: as above; `&MatMut` allows no access to the elements.
unsafe impl Sync for MatMut<'_> {}

impl<'a> MatMut<'a> {
    /// A strided view; `Err` unless every element lies inside `data` and no two elements
    /// share an address.
    pub fn new(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self, KernelError> {
        check_view(data.len(), rows, cols, row_stride, col_stride)?;
        check(injective(rows, cols, row_stride, col_stride), || {
            format!("matrix {rows}×{cols} with strides ({row_stride}, {col_stride}) writes some values twice")
        })?;
        Ok(Self {
            ptr: data.as_mut_ptr(),
            rows,
            cols,
            rs: row_stride,
            cs: col_stride,
            _data: PhantomData,
        })
    }

    /// A dense row-major view of the first `rows·cols` values.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self, KernelError> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// A dense row-major view of the first `rows·cols` values of memory not written yet.
    ///
    /// # Safety
    /// Nothing may read an element of the view before writing it: it is for a product that
    /// overwrites its destination (`packed_f32::gemm_packed`, whose products all do).
    pub(crate) unsafe fn uninit_row_major(
        data: &'a mut [MaybeUninit<f32>],
        rows: usize,
        cols: usize,
    ) -> Result<Self, KernelError> {
        check_view(data.len(), rows, cols, cols, 1)?;
        Ok(Self {
            ptr: data.as_mut_ptr().cast::<f32>(),
            rows,
            cols,
            rs: cols,
            cs: 1,
            _data: PhantomData,
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The pointer, shape and strides.
    pub(crate) fn raw(&self) -> RawView<*mut f32> {
        RawView {
            ptr: self.ptr,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
        }
    }

    /// Splits into blocks of `height` rows (the last may be shorter), top to bottom.
    pub fn split_rows(self, height: usize) -> Vec<MatMut<'a>> {
        self.split(height, true)
    }

    /// Splits into blocks of `width` columns (the last may be narrower), left to right.
    pub fn split_cols(self, width: usize) -> Vec<MatMut<'a>> {
        self.split(width, false)
    }

    /// Splits into blocks of `size` rows (`by_rows`) or columns, the last possibly smaller,
    /// in order.
    fn split(self, size: usize, by_rows: bool) -> Vec<MatMut<'a>> {
        let size = size.max(1);
        let (len, stride) = if by_rows {
            (self.rows, self.rs)
        } else {
            (self.cols, self.cs)
        };
        (0..len)
            .step_by(size)
            .map(|i| {
                let n = size.min(len - i);
                MatMut {
                    // Within the view: i < len, and the offset of row or column i is at most
                    // the last element's offset, which was checked against the slice.
                    ptr: self.ptr.wrapping_add(i * stride),
                    rows: if by_rows { n } else { self.rows },
                    cols: if by_rows { self.cols } else { n },
                    ..self
                }
            })
            .collect()
    }
}

/// Threads one GEMM may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// The calling thread only (the caller parallelises around it).
    One,
    /// Up to this many rayon threads.
    Rayon(usize),
}

/// `dst = a·b`, or `dst += a·b` when `accumulate`: f32, through the `gemm` crate. `Err` when
/// the shapes do not chain (`a` is m×k, `b` k×n, `dst` m×n).
pub fn sgemm(
    dst: MatMut<'_>,
    accumulate: bool,
    a: MatRef<'_>,
    b: MatRef<'_>,
    threads: Threads,
) -> Result<(), KernelError> {
    let (m, n, k) = (dst.rows, dst.cols, a.cols);
    check(a.rows == m && b.rows == k && b.cols == n, || {
        format!(
            "sgemm: {}×{} · {}×{} does not give {m}×{n}",
            a.rows, a.cols, b.rows, b.cols
        )
    })?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let parallelism = match threads {
        Threads::Rayon(t) if t > 1 => gemm::Parallelism::Rayon(t),
        _ => gemm::Parallelism::None,
    };
    // SAFETY: every view was checked against its slice when made (all its elements are in
    // bounds, strides fit isize); the shapes were checked above, so gemm reads a (m×k), b
    // (k×n) and writes dst (m×n) only inside those views. dst's elements are distinct (checked
    // at construction, kept by splitting) and dst is an exclusive borrow, so neither a nor b
    // overlaps it and no other thread touches it. With k == 0 nothing is read from a or b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            a.ptr,
            a.cs as isize,
            a.rs as isize,
            b.ptr,
            b.cs as isize,
            b.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_reaching_past_their_slice_are_refused() {
        let data = vec![0f32; 12];
        assert!(MatRef::row_major(&data, 3, 4).is_ok());
        assert!(MatRef::row_major(&data, 4, 4).is_err());
        // (2·5 + 2·1) = 12: one past the end.
        assert!(MatRef::new(&data, 3, 3, 5, 1).is_err());
        assert!(MatRef::new(&data, 3, 3, 4, 1).is_ok());
        assert!(MatRef::new(&data, 2, 2, usize::MAX / 2, 1).is_err());
        assert!(MatRef::new(&[], 0, 7, 7, 1).is_ok());
    }

    #[test]
    fn writable_views_with_aliased_elements_are_refused() {
        let mut data = vec![0f32; 64];
        assert!(MatMut::new(&mut data, 4, 4, 4, 1).is_ok());
        assert!(MatMut::new(&mut data, 4, 4, 1, 4).is_ok());
        assert!(MatMut::new(&mut data, 4, 4, 3, 1).is_err(), "rows overlap");
        assert!(
            MatMut::new(&mut data, 4, 4, 0, 1).is_err(),
            "one row four times"
        );
        assert!(MatMut::new(&mut data, 4, 1, 0, 1).is_err());
        assert!(MatMut::new(&mut data, 1, 4, 0, 1).is_ok());
        assert!(MatMut::new(&mut data, 1, 4, 0, 0).is_err());
        // Shared reads may alias: a broadcast row is fine.
        assert!(MatRef::new(&data, 4, 4, 0, 1).is_ok());
    }

    #[test]
    fn mismatched_shapes_are_an_error_not_a_call() {
        let (a, b) = (vec![1f32; 6], vec![1f32; 6]);
        let mut d = vec![0f32; 4];
        let r = sgemm(
            MatMut::row_major(&mut d, 2, 2).unwrap(),
            false,
            MatRef::row_major(&a, 2, 3).unwrap(),
            MatRef::row_major(&b, 2, 3).unwrap(),
            Threads::One,
        );
        assert_eq!(
            r.unwrap_err().to_string(),
            "sgemm: 2×3 · 2×3 does not give 2×2"
        );
        assert_eq!(d, [0.0; 4]);
    }

    #[test]
    fn splitting_gives_disjoint_blocks_that_cover_the_view() {
        let mut data: Vec<f32> = vec![0.0; 5 * 7];
        let v = MatMut::row_major(&mut data, 5, 7).unwrap();
        let blocks: Vec<MatMut> = v
            .split_rows(2)
            .into_iter()
            .flat_map(|r| r.split_cols(3))
            .collect();
        assert_eq!(blocks.len(), 3 * 3);
        let ones = [1f32; 4 * 7];
        for (t, blk) in blocks.into_iter().enumerate() {
            let (r, c) = (blk.rows(), blk.cols());
            // dst = (t+1) · (1 ⋯ 1)ᵀ·(1 ⋯ 1)/1: each block filled with its own index + 1.
            let col = vec![(t + 1) as f32; r];
            sgemm(
                blk,
                true,
                MatRef::row_major(&col, r, 1).unwrap(),
                MatRef::row_major(&ones, 1, c).unwrap(),
                Threads::One,
            )
            .unwrap();
        }
        for i in 0..5 {
            for j in 0..7 {
                assert_eq!(
                    data[i * 7 + j],
                    ((i / 2) * 3 + j / 3 + 1) as f32,
                    "({i},{j})"
                );
            }
        }
    }
}
