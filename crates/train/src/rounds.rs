//! Pseudo-label rounds ("noisy student", Xie et al. 2020, "Self-training with Noisy Student
//! improves ImageNet classification"; as the BirdCLEF 2025 and 2026 winners ran it on the
//! unlabelled soundscapes): a teacher scores the soundscapes, a student trains on the labelled
//! clips plus those pseudo-labelled windows under noise (mixup, SpecAugment), and the student
//! teaches the next round.
//!
//! With `[pseudo] swap = "<experiment>"` the rounds alternate between two model families (round
//! 1 the experiment's own, round 2 the swap's, round 3 the own again, …), so no backbone is fed
//! its own labels: the 2026 write-ups report that swapping pseudo-labels between families
//! helped and re-feeding one backbone its own labels made it worse.

/// Which experiment's model trains in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// The experiment's own `[model]` and `[train]`.
    Own,
    /// The `[pseudo] swap` experiment's.
    Swap,
}

/// Who teaches a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeacherOf {
    /// The initial teacher (`[pseudo] teacher_model`, a model spec).
    Initial,
    /// The student trained in round `k` (1-based).
    Student(usize),
}

/// One round of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundPlan {
    /// 1-based round number.
    pub round: usize,
    /// The student's family.
    pub family: Family,
    /// Whose pseudo-labels it trains on.
    pub teacher: TeacherOf,
}

/// The rounds of a recipe: round 1 learns from the initial teacher, round k + 1 from round k's
/// student; with a swap experiment the families alternate, so each student is taught by the
/// other family.
pub fn schedule(rounds: usize, swap: bool) -> Vec<RoundPlan> {
    (1..=rounds)
        .map(|round| RoundPlan {
            round,
            family: if swap && round % 2 == 0 {
                Family::Swap
            } else {
                Family::Own
            },
            teacher: if round == 1 {
                TeacherOf::Initial
            } else {
                TeacherOf::Student(round - 1)
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_family_feeds_each_student_to_the_next_round() {
        let plan = schedule(3, false);
        assert_eq!(plan.len(), 3);
        assert!(plan.iter().all(|p| p.family == Family::Own));
        assert_eq!(
            plan.iter().map(|p| p.teacher).collect::<Vec<_>>(),
            vec![
                TeacherOf::Initial,
                TeacherOf::Student(1),
                TeacherOf::Student(2)
            ]
        );
    }

    #[test]
    fn a_swap_alternates_families_so_no_student_learns_from_its_own_family() {
        let plan = schedule(4, true);
        assert_eq!(
            plan.iter().map(|p| p.family).collect::<Vec<_>>(),
            vec![Family::Own, Family::Swap, Family::Own, Family::Swap]
        );
        for p in &plan[1..] {
            let TeacherOf::Student(k) = p.teacher else {
                panic!("round {} is taught by the initial teacher", p.round)
            };
            assert_eq!(k, p.round - 1);
            assert_ne!(plan[k - 1].family, p.family, "round {}", p.round);
        }
        assert!(schedule(0, true).is_empty());
    }
}
