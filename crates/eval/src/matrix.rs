//! Row-major `f32` matrices: rows are 5 s windows, columns are species.

use crate::error::{Error, Result};

/// A dense row-major matrix whose length always equals `n_rows * n_cols`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    n_rows: usize,
    n_cols: usize,
    data: Vec<f32>,
}

/// Predicted scores (probabilities or logits: only their order matters to the metrics).
pub type Scores = Matrix;

/// Ground truth: a value `> 0.5` is a positive, anything else a negative.
pub type Labels = Matrix;

impl Matrix {
    /// Wraps `data` (row-major) as an `n_rows × n_cols` matrix.
    pub fn new(n_rows: usize, n_cols: usize, data: Vec<f32>) -> Result<Self> {
        let expected = n_rows.checked_mul(n_cols).ok_or_else(|| {
            Error::InvalidArgument(format!("{n_rows} × {n_cols} overflows usize"))
        })?;
        if data.len() != expected {
            return Err(Error::ShapeMismatch {
                what: "matrix data".into(),
                expected: format!("{n_rows} × {n_cols} = {expected} values"),
                got: format!("{} values", data.len()),
            });
        }
        Ok(Self {
            n_rows,
            n_cols,
            data,
        })
    }

    /// Builds a matrix from rows, which must all have the same length.
    pub fn from_rows(rows: &[Vec<f32>]) -> Result<Self> {
        let n_cols = rows.first().map_or(0, Vec::len);
        let mut data = Vec::with_capacity(rows.len() * n_cols);
        for (i, row) in rows.iter().enumerate() {
            if row.len() != n_cols {
                return Err(Error::ShapeMismatch {
                    what: format!("row {i}"),
                    expected: format!("{n_cols} columns (as row 0)"),
                    got: format!("{} columns", row.len()),
                });
            }
            data.extend_from_slice(row);
        }
        Self::new(rows.len(), n_cols, data)
    }

    /// An all-zero matrix.
    pub fn zeros(n_rows: usize, n_cols: usize) -> Self {
        Self {
            n_rows,
            n_cols,
            data: vec![0.0; n_rows * n_cols],
        }
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Number of columns.
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    /// The row-major values.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Consumes the matrix, returning its row-major values.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// The value at (`row`, `col`); `None` out of range.
    pub fn get(&self, row: usize, col: usize) -> Option<f32> {
        if row < self.n_rows && col < self.n_cols {
            self.data.get(row * self.n_cols + col).copied()
        } else {
            None
        }
    }

    /// Sets the value at (`row`, `col`); returns `false` (and changes nothing) out of range.
    pub fn set(&mut self, row: usize, col: usize, value: f32) -> bool {
        if row < self.n_rows && col < self.n_cols {
            self.data[row * self.n_cols + col] = value;
            true
        } else {
            false
        }
    }

    /// One row; empty out of range.
    pub fn row(&self, row: usize) -> &[f32] {
        if row < self.n_rows {
            &self.data[row * self.n_cols..(row + 1) * self.n_cols]
        } else {
            &[]
        }
    }

    /// One column, copied; empty out of range.
    pub fn column(&self, col: usize) -> Vec<f32> {
        if col >= self.n_cols {
            return Vec::new();
        }
        self.data
            .iter()
            .skip(col)
            .step_by(self.n_cols)
            .copied()
            .collect()
    }

    /// The sub-matrix of the given rows (in that order), all columns.
    pub fn select_rows(&self, rows: &[usize]) -> Result<Self> {
        let mut data = Vec::with_capacity(rows.len() * self.n_cols);
        for &r in rows {
            if r >= self.n_rows {
                return Err(Error::InvalidArgument(format!(
                    "row {r} out of range ({} rows)",
                    self.n_rows
                )));
            }
            data.extend_from_slice(self.row(r));
        }
        Self::new(rows.len(), self.n_cols, data)
    }

    /// The sub-matrix of the given columns (in that order), all rows.
    pub fn select_cols(&self, cols: &[usize]) -> Result<Self> {
        if let Some(&c) = cols.iter().find(|&&c| c >= self.n_cols) {
            return Err(Error::InvalidArgument(format!(
                "column {c} out of range ({} columns)",
                self.n_cols
            )));
        }
        let mut data = Vec::with_capacity(self.n_rows * cols.len());
        for r in 0..self.n_rows {
            let row = self.row(r);
            data.extend(cols.iter().map(|&c| row[c]));
        }
        Self::new(self.n_rows, cols.len(), data)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shape_is_checked() {
        assert!(matches!(
            Matrix::new(2, 3, vec![0.0; 5]),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            Matrix::from_rows(&[vec![1.0, 2.0], vec![3.0]]),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn rows_columns_and_selection() {
        let m = Matrix::from_rows(&[vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]).unwrap();
        assert_eq!(m.row(1), &[4.0, 5.0, 6.0]);
        assert_eq!(m.column(2), vec![3.0, 6.0]);
        assert_eq!(m.get(1, 0), Some(4.0));
        assert_eq!(m.get(2, 0), None);
        let s = m.select_cols(&[2, 0]).unwrap();
        assert_eq!(s.data(), &[3.0, 1.0, 6.0, 4.0]);
        let r = m.select_rows(&[1]).unwrap();
        assert_eq!(r.data(), &[4.0, 5.0, 6.0]);
        assert!(m.select_cols(&[3]).is_err());
    }
}
