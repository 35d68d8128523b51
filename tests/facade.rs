//! The facade crate exposes what a dependent application needs, under stable paths.

use selfcascade::cascade::scheduler::{build, SchedulerConfig, SchedulerKind};
use selfcascade::{ScalePlan, Size};

#[test]
fn a_dependent_app_can_plan_and_build_a_scheduler() {
    let plan = ScalePlan::new(Size::new(1024, 1024), Size::new(2048, 2048), 64).unwrap();
    assert_eq!(
        plan.stages(),
        &[Size::new(1024, 1024), Size::new(2048, 2048)]
    );
    let cfg = SchedulerConfig::from_json(r#"{"_class_name":"EulerDiscreteScheduler"}"#).unwrap();
    let s = build::<burn::backend::Flex, 4>(&cfg, None, 0.0).unwrap();
    assert_eq!(s.class_name(), SchedulerKind::EulerDiscrete.class_name());
    assert!(
        build::<burn::backend::Flex, 4>(&cfg, None, 0.5).is_err(),
        "eta is DDIM-only"
    );
}
