Feature: An ordering physician sees a hip fracture card
  As a resident ordering hip imaging in the emergency department
  I want the AI's reading of the patient's latest AP pelvis radiograph as a card
  So that I see the finding, its confidence and its basis (the heat map) before I sign the order

  Background:
    Given the hip fracture service is running on a real Triton server
    And the patient's latest AP pelvis radiograph is in the image store

  Scenario: Selecting a hip X-ray order shows a card with a heat map and a report to accept
    When the EHR sends an order-select hook for a hip X-ray with the study prefetched
    Then the EHR receives exactly one card with a summary under 140 characters
    And the card names each hip's side from the image header
    And the card offers to create a preliminary DiagnosticReport with the heat map attached
    And the card says the models are not for clinical use

  Scenario: Selecting an unrelated order shows nothing
    When the EHR sends an order-select hook for a chest X-ray
    Then the EHR receives no cards
