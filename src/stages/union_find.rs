//! Union-find over dense document numbers: the connected components of the candidate pairs that LSH
//! finds. Eight bytes per document, whatever the number of pairs; every other part of `minhash_dedup`
//! (band keys, candidate groups) lives in DataFusion operators that spill.

/// Disjoint sets of `0..n`, by union by size and path halving.
#[derive(Debug, Clone)]
pub struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    pub fn new(n: usize) -> Self {
        assert!(n <= u32::MAX as usize, "at most 2^32 documents per stage");
        Self {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }

    pub fn len(&self) -> usize {
        self.parent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    pub fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    /// Joins the sets of `a` and `b`; returns true when they were apart.
    pub fn union(&mut self, a: u32, b: u32) -> bool {
        let (mut ra, mut rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        if self.size[ra as usize] < self.size[rb as usize] {
            std::mem::swap(&mut ra, &mut rb);
        }
        self.parent[rb as usize] = ra;
        self.size[ra as usize] += self.size[rb as usize];
        true
    }

    /// The size of `x`'s set.
    pub fn set_size(&mut self, x: u32) -> u32 {
        let r = self.find(x);
        self.size[r as usize]
    }

    /// Every element's root, and the sizes indexed by root (meaningful at roots only).
    pub fn into_roots(mut self) -> (Vec<u32>, Vec<u32>) {
        for x in 0..self.parent.len() as u32 {
            let r = self.find(x);
            self.parent[x as usize] = r;
        }
        (self.parent, self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components() {
        let mut uf = UnionFind::new(10);
        assert!(uf.union(1, 2));
        assert!(uf.union(3, 4));
        assert!(uf.union(2, 4));
        assert!(!uf.union(1, 3));
        assert!(uf.union(7, 8));
        assert_eq!(uf.find(1), uf.find(4));
        assert_ne!(uf.find(1), uf.find(7));
        assert_eq!(uf.set_size(3), 4);
        assert_eq!(uf.set_size(8), 2);
        assert_eq!(uf.set_size(0), 1);
        // A long chain stays shallow enough to walk.
        let mut chain = UnionFind::new(100_000);
        for i in 1..100_000 {
            chain.union(i - 1, i);
        }
        assert_eq!(chain.set_size(99_999), 100_000);
        let (roots, sizes) = uf.into_roots();
        assert_eq!(roots[1], roots[3]);
        assert_eq!(sizes[roots[1] as usize], 4);
        assert_eq!(roots[0], 0);
    }
}
