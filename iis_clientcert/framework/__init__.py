"""The provider framework: the base provider (check / diff / create / read / update /
delete from typed hooks), input declarations and the helpers resources share."""
